"""Prefill throughput: our jitted Flax forward vs transformers (PyTorch, CPU), same weights and inputs.

    python benchmarks/forward.py [--preset small] [--batch 4] [--text 192] [--image 224]

Prints tokens/s of each and the ratio. A benchmark, not a test: figures go in the README.
"""

import argparse

import jax
import numpy as np
import torch

from benchmarks import common


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--text", type=int, default=192)
    parser.add_argument("--image", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    hf, ours = common.twin_models(args.preset)
    ids, pixels, grids = common.random_image_batch(ours.config, args.batch, args.image, args.text)
    t_ids = torch.as_tensor(ids)
    t_kwargs = dict(input_ids=t_ids, mm_token_type_ids=(t_ids == ours.config.image_token_id).int(),
                    pixel_values=torch.as_tensor(pixels), image_grid_thw=torch.as_tensor(grids))

    def run_hf():
        with torch.no_grad():
            return hf(**t_kwargs).logits

    def run_ours():
        return jax.block_until_ready(ours(ids, pixel_values=pixels, image_grid_thw=grids))

    gap = np.abs(np.asarray(run_ours()) - run_hf().numpy()).max()
    tokens = ids.size
    hf_s = common.median_seconds(run_hf, args.repeats)
    ours_s = common.median_seconds(run_ours, args.repeats)
    print(f"preset={args.preset} batch={args.batch} seq={ids.shape[1]} (image tokens/seq="
          f"{int((ids[0] == ours.config.image_token_id).sum())}) torch_threads={torch.get_num_threads()} "
          f"max|logit diff|={gap:.2e}")
    print(f"transformers: {tokens / hf_s:10.1f} tok/s")
    print(f"gog_jax:      {tokens / ours_s:10.1f} tok/s")
    print(f"ratio (gog_jax / transformers): {hf_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()

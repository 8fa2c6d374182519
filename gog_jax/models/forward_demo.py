"""`forward` mode: build a preset model, round-trip it through a HF checkpoint, run one forward.

What the main job runs until the training pipeline exists: it exercises the real pieces
(preset of either family -> Flax model -> safetensors export -> reload -> image processing ->
M-RoPE -> jitted multimodal forward) and reports what it measured. It trains nothing and says so.
"""

import os
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from gog_jax.models import families
from gog_jax.processing import image as image_lib


def run(config, workdir: str) -> dict:
    cfg = families.named(config.model.family).model_config(config.model.preset)
    model = families.build(cfg, seed=config.seed)
    checkpoint = os.path.join(workdir, "model")
    families.save_pretrained(model, checkpoint)
    model = families.from_pretrained(checkpoint, dtype=config.model.dtype)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

    rng = np.random.default_rng(config.seed)
    picture = rng.integers(0, 256, (config.image_size, config.image_size, 3), dtype=np.uint8)
    pixels, grid = image_lib.preprocess(picture, max_pixels=config.image_size ** 2, **families.processor(cfg))
    num_image_tokens = int(np.prod(grid)) // cfg.vision.spatial_merge_size ** 2
    text = rng.integers(32, cfg.text.vocab_size, config.text_tokens)
    ids = np.concatenate([[cfg.vision_start_token_id], [cfg.image_token_id] * num_image_tokens,
                          [cfg.vision_end_token_id], text])[None].repeat(config.batch_size, 0)
    batch_pixels, batch_grid = np.concatenate([pixels] * config.batch_size), np.stack([grid] * config.batch_size)

    start = time.perf_counter()
    logits = jax.block_until_ready(model(ids, pixel_values=batch_pixels, image_grid_thw=batch_grid))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    logits = jax.block_until_ready(model(ids, pixel_values=batch_pixels, image_grid_thw=batch_grid))
    step_s = time.perf_counter() - start
    if not np.isfinite(np.asarray(logits)).all():
        raise FloatingPointError("Non-finite logits from the forward pass.")
    summary = {
        "mode": "forward",
        "note": "forward pass only: no training is run in this mode",
        "checkpoint": checkpoint,
        "params": num_params,
        "batch_tokens": int(ids.size),
        "image_tokens_per_sequence": num_image_tokens,
        "first_call_s": round(compile_s, 3),
        "tokens_per_s": round(ids.size / step_s, 1),
    }
    logging.info("forward summary: %s", summary)
    return summary

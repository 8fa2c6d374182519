"""SFT training-step throughput: our `Learner` vs transformers + PyTorch (CPU), same weights and batch.

    python -m benchmarks.train_step [--preset small] [--rows 4] [--seq_len 512] [--steps 3] [--threads N]
                                    [--loss_share 0.5]

One step is forward + backward + global-norm clipping + AdamW (weight decay on matrices only,
as `optim.make_optimizer` does). The batch is `rows` rendered multi-turn conversations with
images, one per row (no packing), each as close to `seq_len` tokens as whole turns allow, so
both sides compute on the same padded [rows, seq_len] tokens. Torch gets them right-padded with
attention_mask, mm_token_type_ids (for M-RoPE) and labels on assistant tokens only; the loss of
both is the mean NLL over those tokens, checked equal on the first two steps (so the update
too) before anything is timed. Tokens/s counts non-padding tokens. Torch runs on `--threads`; XLA uses every core.
Ours runs its LM head on each row's loss positions only (`--loss_share` of a row, the main job's
`pack.loss_share`; 1: every position, as transformers does), and the process has the main job's
allocator settings (`gog_jax.host_allocator`, which torch shares).
A benchmark, not a test: figures go in the README.
"""

import argparse

import jax
import numpy as np
import torch

from benchmarks import common
from gog_jax import host_allocator, sharding
from gog_jax.agent import protocol
from gog_jax.agent import render as render_lib
from gog_jax.rollout.packing import Example, PackConfig, Packed, image_inputs, loss_len_of
from gog_jax.train import optim
from gog_jax.train.step import Learner, LossConfig
from gog_jax.world.corpus import default_tokenizer

VISION = render_lib.VisionSpec(max_pixels=224 * 224)


def _image(rng, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def conversation(tokenizer, seed: int, max_tokens: int) -> Example:
    """A question image (224x168), then glance/gaze turns (every other one returning a 112x112 crop)
    and a final answer: as many turns as fit in `max_tokens`."""
    rng = np.random.default_rng(seed)
    head = [protocol.Turn("system", (protocol.system_prompt(style="brief"),)),
            protocol.question_turn(f"What is shown in picture {seed}?", _image(rng, 224, 168))]
    answer = protocol.assistant_turn("<think>the crops agree</think><answer>a cat</answer>")
    body, best = [], None
    while True:
        chunks = render_lib.render(head + body + [answer], tokenizer, VISION)
        ids = np.concatenate([c.token_ids for c in chunks])
        if len(ids) > max_tokens:
            break
        best = Example(ids, render_lib.loss_mask(chunks), [im for c in chunks for im in c.images], id=f"c{seed}")
        turn = len(body) // 2
        body += [protocol.assistant_turn(f"<think>look at part {turn} of the picture more closely</think>"
                                         f"<gaze>[{turn}, {turn}, {turn + 50}, {turn + 50}]</gaze>"),
                 protocol.observation_turn(f"1. result {turn}: a small animal on a sofa",
                                           _image(rng, 112, 112) if turn % 2 == 0 else None)]
    if best is None:
        raise ValueError(f"seq_len {max_tokens} cannot hold even a one-turn conversation.")
    return best


def torch_inputs(examples: list[Example], seq_len: int, image_token_id: int, pad_id: int) -> dict:
    """The same conversations as transformers takes them: right-padded rows, labels -100 off the loss."""
    ids = np.full((len(examples), seq_len), pad_id, np.int64)
    labels = np.full_like(ids, -100)
    attention = np.zeros_like(ids)
    pixels, grids = [], []
    for row, ex in enumerate(examples):
        n = len(ex)
        ids[row, :n] = ex.token_ids
        labels[row, :n] = np.where(ex.loss_mask, ex.token_ids, -100)
        attention[row, :n] = 1
        for im in ex.images:
            pv, grid = image_inputs(im, VISION)
            pixels.append(pv)
            grids.append(grid)
    t_ids = torch.as_tensor(ids)
    return dict(input_ids=t_ids, attention_mask=torch.as_tensor(attention),
                mm_token_type_ids=(t_ids == image_token_id).int(), labels=torch.as_tensor(labels),
                pixel_values=torch.as_tensor(np.concatenate(pixels)),
                image_grid_thw=torch.as_tensor(np.stack(grids)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median), after two checked warm-up steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--vocab_chunk", type=int, default=4096)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--clip_norm", type=float, default=1.0)
    parser.add_argument("--loss_share", type=float, default=0.5, help="share of a row where our LM head runs")
    args = parser.parse_args()
    host_allocator.configure()
    if args.threads:
        torch.set_num_threads(args.threads)

    hf, ours = common.twin_models(args.preset)
    cfg = ours.config
    tokenizer = default_tokenizer()
    examples = [conversation(tokenizer, seed, args.seq_len) for seed in range(args.rows)]
    images = [im for ex in examples for im in ex.images]
    patches = max(int(np.prod(render_lib.image_grid(*im.shape[:2], VISION))) for im in images)
    packed = Packed(examples, cfg, VISION, PackConfig(rows=args.rows, seq_len=args.seq_len,
                                                      image_slots=len(images), image_patches=patches,
                                                      max_segments=1,
                                                      loss_len=loss_len_of(args.seq_len, args.loss_share)))
    assert len(packed) == 1 and not packed.dropped, "every conversation should get a row of the one batch"
    batch = packed.batch(0)
    tokens = int((batch.segment_ids > 0).sum())
    trained = packed.trained_tokens(0)

    # ---- ours: the trainer's Learner on a one-device mesh ------------------------------------
    tx = optim.make_optimizer(learning_rate=args.learning_rate, schedule="constant", warmup_steps=0,
                              total_steps=args.steps + 1, weight_decay=args.weight_decay, clip_norm=args.clip_norm)
    learner = Learner(ours, tx, LossConfig(kind="sft", vocab_chunk=args.vocab_chunk),
                      sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1]))

    def step_ours():
        return learner.step([batch], [1.0 / trained])["nll"]  # host metrics: waits for the step

    # ---- transformers + torch: the same optimizer ------------------------------------------
    hf.train()
    params = [p for p in hf.parameters() if p.requires_grad]
    t_opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim > 1], "weight_decay": args.weight_decay},
                               {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
                              lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=True)
    t_kwargs = torch_inputs(examples, args.seq_len, cfg.image_token_id, cfg.pad_token_id)

    def step_torch():
        t_opt.zero_grad(set_to_none=True)
        loss = hf(**t_kwargs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip_norm)
        t_opt.step()
        return loss.item()

    # the first step compiles ours and warms torch; its losses must agree, and so must the second's
    # (which checks that both applied the same update)
    for name in ("first", "second"):
        ours_loss, torch_loss = step_ours(), step_torch()
        rel = abs(ours_loss - torch_loss) / abs(torch_loss)
        print(f"{name}-step loss: gog_jax {ours_loss:.6f}  transformers {torch_loss:.6f}  (rel diff {rel:.1e})")
        assert rel < 1e-3, f"the two {name} steps do not compute the same loss"

    hf_s = common.median_seconds(step_torch, args.steps, warmup=0)
    ours_s = common.median_seconds(step_ours, args.steps, warmup=0)
    print(f"preset={args.preset} rows={args.rows} seq_len={args.seq_len} tokens={tokens} (trained {trained}, "
          f"images {len(images)}, image tokens {int((batch.tokens == cfg.image_token_id).sum())}) "
          f"torch_threads={torch.get_num_threads()} xla=all {jax.local_devices()[0].platform} cores")
    print(f"transformers: {tokens / hf_s:10.1f} tok/s  ({hf_s:.2f} s/step)")
    print(f"gog_jax:      {tokens / ours_s:10.1f} tok/s  ({ours_s:.2f} s/step)")
    print(f"ratio (gog_jax / transformers): {hf_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()

"""Sampling throughput: our engine vs transformers `generate` vs a minimal jitted greedy loop,
and multi-turn appends vs re-prefilling the conversation every turn (both strategies one
session at a time and batched; the headline is each at its best).

    python -m benchmarks.sampler [--preset small] [--batch 8] [--prompt 64] [--new 128] [--question_image 224]
                                 [--observation 64] [--turn_tokens 16]

Same weights, same prompts, greedy, a fixed number of new tokens (EOS ignored). The minimal
loop (written here, batch prefill + `fori_loop` decode over our model's functional forward)
is the practical limit for these shapes. A benchmark, not a test: figures go in the README.
"""

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from benchmarks import common
from gog_jax.models.qwen2_5_vl import KVCache
from gog_jax.processing import image as image_lib
from gog_jax.sampling import Engine, SamplingParams


@functools.partial(jax.jit, static_argnums=(0, 3))
def minimal_greedy(graphdef, params, prompts, new_tokens):
    """Batch prefill then a fori_loop of argmax steps: no slots, no stops, no sampling."""
    model = nnx.merge(graphdef, params)
    batch, length = prompts.shape
    cache = KVCache.zeros(model.config.text, batch, length + new_tokens, model.dtype)
    positions = jnp.broadcast_to(jnp.arange(length), (3, batch, length))
    zeros = jnp.zeros((batch,), jnp.int32)
    hidden, cache = model.forward(prompts, positions, cache=cache, cache_index=zeros)
    token = jnp.argmax(model.logits(hidden[:, -1]), -1).astype(jnp.int32)

    def body(i, carry):
        cache, token, out = carry
        out = out.at[:, i].set(token)
        pos = jnp.full((3, batch, 1), length + i)
        hidden, cache = model.forward(token[:, None], pos, cache=cache, cache_index=zeros + length + i)
        return cache, jnp.argmax(model.logits(hidden[:, 0]), -1).astype(jnp.int32), out

    _, _, out = jax.lax.fori_loop(0, new_tokens, body, (cache, token, jnp.zeros((batch, new_tokens), jnp.int32)))
    return out


def multi_turn(engine: Engine, prompts, images, observations, params, reprefill: bool, batched: bool) -> int:
    """Each request: decode, then three observations, decoding after each.

    `images[i]` is the image (pixel_values/image_grid_thw kwargs, or None) of the prompt (i = 0)
    and of observation i. With `reprefill`, every turn opens a fresh session holding the whole
    conversation so far, images included. With `batched`, a turn's requests go to the engine
    together (`open_many`, `append_many`), else one session at a time. Returns the number of
    tokens prefilled, to show what each strategy computes.
    """
    def open_all(requests):
        if not batched:
            return [engine.open(params=params, **r) for r in requests]
        sessions = engine.open_many(requests, params)
        assert not any(isinstance(s, Exception) for s in sessions), sessions
        return sessions

    sessions = open_all([dict(input_ids=p, **(images[0] or {})) for p in prompts])
    prefilled = sum(len(p) for p in prompts)
    for turn in range(len(observations) + 1):
        done = []
        while len(done) < len(sessions):
            done += engine.step()
        if turn == len(observations):
            break
        obs, kwargs = observations[turn], images[turn + 1] or {}
        if reprefill:
            seen = [k for k in images[:turn + 2] if k]
            merged = {name: np.concatenate([k[name] for k in seen])
                      for name in ("pixel_values", "image_grid_thw")} if seen else {}
            requests = [dict(input_ids=np.asarray(s.tokens + list(obs)), **merged) for s in sessions]
            for s in sessions:
                engine.close(s)
            prefilled += sum(len(r["input_ids"]) for r in requests)
            sessions = open_all(requests)
        elif batched:
            errors = engine.append_many([(s, dict(input_ids=obs, **kwargs)) for s in sessions])
            assert not any(errors), errors
            engine.resume_many(sessions, params)
            prefilled += len(obs) * len(sessions)
        else:
            for s in sessions:
                engine.append(s, obs, **kwargs)
                engine.resume(s)
            prefilled += len(obs) * len(sessions)
    for s in sessions:
        engine.close(s)
    return prefilled


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--question_image", type=int, default=224, help="multi-turn prompt image side (0: text only)")
    # multi-turn sizes: the medians of the embedded default's oracle episodes (an observation 64-69
    # tokens, an assistant turn 16), not chosen for the ratio; the README also quotes 32 / 32
    parser.add_argument("--observation", type=int, default=64, help="multi-turn observation tokens")
    parser.add_argument("--turn_tokens", type=int, default=16, help="multi-turn new tokens a turn")
    args = parser.parse_args()

    hf, model = common.twin_models(args.preset)
    rng = np.random.default_rng(0)
    prompts = rng.integers(100, 10000, (args.batch, args.prompt))
    params = SamplingParams(temperature=0.0, max_new_tokens=args.new, ignore_eos=True)
    engine = Engine(model, num_slots=args.batch, max_seq_len=1024, decode_steps=32)
    graphdef, weights = nnx.split(model)

    def run_ours():
        return engine.generate([dict(input_ids=p) for p in prompts], params)

    def run_minimal():
        return jax.block_until_ready(minimal_greedy(graphdef, weights, jnp.asarray(prompts, jnp.int32), args.new))

    def run_hf():
        with torch.no_grad():
            return hf.generate(torch.as_tensor(prompts), max_new_tokens=args.new, min_new_tokens=args.new,
                               do_sample=False)

    ours = np.stack([o.token_ids for o in run_ours()])
    same_as_minimal = np.array_equal(ours, np.asarray(run_minimal()))
    same_as_hf = np.array_equal(ours, run_hf()[:, args.prompt:].numpy())
    tokens = args.batch * args.new
    # peers timed in turn, repeat by repeat, so a shared machine's load falls on all of them alike
    times = {run: [] for run in (run_ours, run_minimal, run_hf)}
    for _ in range(args.repeats):
        for run, runs in times.items():
            runs.append(common.median_seconds(run, 1, warmup=0))
    t_ours, t_min, t_hf = (statistics.median(runs) for runs in times.values())
    print(f"preset={args.preset} batch={args.batch} prompt={args.prompt} new={args.new} greedy "
          f"(outputs equal: minimal={same_as_minimal}, transformers={same_as_hf})")
    print(f"transformers generate: {tokens / t_hf:9.1f} tok/s")
    print(f"minimal jitted loop:   {tokens / t_min:9.1f} tok/s")
    print(f"gog_jax engine:        {tokens / t_ours:9.1f} tok/s")
    print(f"engine / transformers: {t_hf / t_ours:.2f}x    engine / minimal loop: {t_min / t_ours:.2f}x")

    # Multi-turn, as a GoG episode: the prompt holds the question image (224x224: 64 tokens; the
    # 7B paper's images are ~1,000 tokens) and its text; 3 observations follow, the second with a
    # 112x112 crop (18 tokens with its vision start/end) in place of as many of its text tokens.
    turn_params = SamplingParams(temperature=0.0, max_new_tokens=args.turn_tokens, ignore_eos=True)
    cfg = model.config

    def image(side):
        pixels, grid = image_lib.preprocess(rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
                                            max_pixels=side * side)
        pads = ([cfg.vision_start_token_id] + [cfg.image_token_id] * (int(np.prod(grid)) // 4)
                + [cfg.vision_end_token_id])
        return dict(pixel_values=pixels, image_grid_thw=grid[None]), np.asarray(pads)

    question, question_pads = image(args.question_image) if args.question_image else (None, np.zeros(0, int))
    crop, crop_pads = image(112)
    turn_prompts = [np.concatenate([question_pads, p]) for p in prompts]
    text = lambda n: rng.integers(100, 10000, n)  # noqa: E731
    observations = [text(args.observation), np.concatenate([crop_pads, text(args.observation - len(crop_pads))]),
                    text(args.observation)]
    images = [question, None, crop, None]
    turn_engine = Engine(model, num_slots=args.batch, max_seq_len=1024, decode_steps=32)
    # both strategies one session at a time and batched (a turn's requests in one engine call)
    variants = [(reprefill, batched) for batched in (False, True) for reprefill in (False, True)]
    run = lambda variant: multi_turn(turn_engine, turn_prompts, images, observations,  # noqa: E731
                                     turn_params, *variant)
    prefilled = {variant: run(variant) for variant in variants}
    turns = {variant: [] for variant in variants}
    for _ in range(args.repeats):
        for variant, runs in turns.items():
            runs.append(common.median_seconds(lambda: run(variant), 1, warmup=0))  # noqa: B023
    t = {variant: statistics.median(runs) for variant, runs in turns.items()}
    print(f"multi-turn ({args.question_image}px question image, 3 observations of {args.observation} tokens, "
          f"one with an image, {args.turn_tokens} new tokens a turn; append prefills {prefilled[False, False]} "
          f"tokens, re-prefill {prefilled[True, False]}):")
    for batched in (False, True):
        print(f"  {'batched' if batched else 'one session at a time'}: append {t[False, batched]:.2f}s, "
              f"re-prefill {t[True, batched]:.2f}s: append is {t[True, batched] / t[False, batched]:.2f}x faster")
    best_append, best_reprefill = min(t[False, b] for b in (False, True)), min(t[True, b] for b in (False, True))
    print(f"  best against best: append {best_append:.2f}s, re-prefill {best_reprefill:.2f}s: "
          f"append is {best_reprefill / best_append:.2f}x faster")


if __name__ == "__main__":
    main()

"""Decode throughput on an accelerator, against the memory-bandwidth roofline.

    python -m benchmarks.roofline [--preset 3b] [--dtype bfloat16] [--batches 1,8,64] [--prompt 64] [--new 128]

A decode step reads every decoder weight once (the LM head too; the embedding table only in
the rows it gathers, unless it is the tied head) plus each slot's KV cache so far. At the copy
bandwidth measured in the same run (a jitted read-and-write of a large array), that bounds a
batch of B slots at B * bandwidth / bytes-per-step tokens/s. Prints, per batch size, the engine
(greedy; and sampling at temperature 1, GRPO's setting), the minimal jitted loop of
`benchmarks.sampler` and transformers `generate` on the same device, same weights and dtype, each
as tokens/s and as a fraction of the roofline (the peers' decode alone as N new tokens less 1), and
the batch's prefill: the engine's `open_many` against the minimal loop's prefill and first step.
Meant for a GPU or TPU; on a CPU use a small preset.
A benchmark, not a test: figures go in the README.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from benchmarks import common
from benchmarks.sampler import minimal_greedy
from gog_jax.sampling import Engine, SamplingParams


def copy_bandwidth(gib: float = 4.0, repeats: int = 20) -> float:
    """Bytes/s of a jitted x + 1 over `gib` GiB of bfloat16 (each byte read once and written once)."""
    x = jnp.zeros((int(gib * 2 ** 30) // 2,), jnp.bfloat16)
    bump = jax.jit(lambda x: x + 1, donate_argnums=0)
    x = jax.block_until_ready(bump(x))
    start = time.perf_counter()
    for _ in range(repeats):
        x = bump(x)
    jax.block_until_ready(x)
    return 2 * x.nbytes * repeats / (time.perf_counter() - start)


def bytes_per_step(model, batch: int, mean_length: float) -> float:
    """Weights a decode step reads (decoder layers, final norm, LM head) + the batch's KV cache."""
    text = model.config.text
    params = nnx.state(model.model, nnx.Param)
    total = sum(x.nbytes for x in jax.tree.leaves(params)) - model.model.embed_tokens[...].nbytes
    head = model.model.embed_tokens[...] if model.lm_head is None else model.lm_head.kernel[...]
    total += head.nbytes
    kv_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * head.dtype.itemsize
    return total + batch * mean_length * kv_per_token


def median_engine_seconds(engine: Engine, prompts, params: SamplingParams, repeats: int) -> tuple[float, float]:
    """Medians of `engine_seconds` (open, decode) after one warm-up call (which compiles)."""
    engine_seconds(engine, prompts, params)
    opens, decodes = zip(*(engine_seconds(engine, prompts, params) for _ in range(repeats)))
    return statistics.median(opens), statistics.median(decodes)


def engine_seconds(engine: Engine, prompts, params: SamplingParams) -> tuple[float, float]:
    """Seconds the engine spends opening the prompts (one `open_many`: their prefill, on the
    host and the device) and then decoding them (its `step` calls only): its own clocks, not a
    timer around `generate`."""
    start = time.perf_counter()
    sessions = engine.open_many([dict(input_ids=p) for p in prompts], params)
    jax.block_until_ready(engine.state)
    opened = time.perf_counter()
    stopped = 0
    while stopped < len(sessions):
        stopped += len(engine.step())
    seconds = time.perf_counter() - opened
    for session in sessions:
        engine.close(session)
    return opened - start, seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="3b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_transformers", action="store_true")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__} on {device}",
          flush=True)
    bandwidth = copy_bandwidth(gib=4.0 if jax.default_backend() != "cpu" else 0.25)
    print(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s", flush=True)
    start = time.perf_counter()
    hf, model = common.twin_models(args.preset, dtype=args.dtype, device=device)
    if device == "cuda":
        torch.cuda.empty_cache()
    graphdef, weights = nnx.split(model)
    print(f"preset {args.preset} in {args.dtype}: built in {time.perf_counter() - start:.0f} s", flush=True)
    rng = np.random.default_rng(0)

    for batch in (int(b) for b in args.batches.split(",")):
        start = time.perf_counter()
        prompts = rng.integers(100, min(10000, model.config.text.vocab_size), (batch, args.prompt))
        step_bytes = bytes_per_step(model, batch, args.prompt + args.new / 2)
        bound = batch * bandwidth / step_bytes
        engine = Engine(model, num_slots=batch, max_seq_len=args.prompt + args.new + 64, decode_steps=32)
        greedy, sampled = (SamplingParams(temperature=t, max_new_tokens=args.new, ignore_eos=True)
                           for t in (0.0, 1.0))

        def run_minimal(new_tokens=args.new, prompts=prompts):
            return jax.block_until_ready(minimal_greedy(graphdef, weights, jnp.asarray(prompts, jnp.int32),
                                                        new_tokens))

        def run_hf(new_tokens, prompts=prompts):
            with torch.no_grad():
                out = hf.generate(torch.as_tensor(prompts, device=device), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False)
            if device == "cuda":
                torch.cuda.synchronize()
            return out

        ours = np.stack([o.token_ids for o in engine.generate([dict(input_ids=p) for p in prompts], greedy)])
        agree = f"engine == minimal loop: {np.array_equal(ours, np.asarray(run_minimal()))}"
        tokens = batch * args.new
        open_seconds, greedy_seconds = median_engine_seconds(engine, prompts, greedy, args.repeats)
        decode = {"engine, greedy": greedy_seconds,
                  "engine, temperature 1": median_engine_seconds(engine, prompts, sampled, args.repeats)[1]}
        whole = {"engine, greedy": common.median_seconds(
                     lambda: engine.generate([dict(input_ids=p) for p in prompts], greedy), args.repeats),
                 "minimal jitted loop": common.median_seconds(run_minimal, args.repeats)}
        minimal_prefill = common.median_seconds(lambda: run_minimal(1), args.repeats)  # and one step
        decode["minimal jitted loop"] = whole["minimal jitted loop"] - minimal_prefill
        if not args.skip_transformers:
            theirs = run_hf(args.new)[:, args.prompt:].cpu().numpy()
            same = (ours == theirs).cumprod(axis=1).sum(axis=1)  # greedy tokens equal before the first difference
            agree += f"; equal to transformers before the first difference: median {np.median(same):.0f} tokens"
            whole["transformers generate"] = common.median_seconds(lambda: run_hf(args.new), args.repeats)
            decode["transformers generate"] = (whole["transformers generate"]
                                               - common.median_seconds(lambda: run_hf(1), args.repeats))
        # seconds a decode step; the peers' are timed as (N new tokens) - (1 new token): N - 1 steps
        steps = {name: seconds / (args.new - (not name.startswith("engine"))) for name, seconds in decode.items()}
        print(f"\nbatch {batch}, {args.prompt}-token prompts, {args.new} new tokens ({agree})")
        print(f"  decode roofline: {bound:.0f} tok/s ({step_bytes / 1e9:.2f} GB a step at the measured bandwidth)")
        for name, step in steps.items():
            print(f"  decode only, {name:24s} {batch / step:9.0f} tok/s {batch / step / bound:6.1%} "
                  f"of the roofline ({step * 1e3:.2f} ms a step)")
        for name, seconds in whole.items():
            print(f"  prefill + decode, {name:21s} {tokens / seconds:9.0f} tok/s")
        print(f"  prefill of the batch: engine open_many {open_seconds * 1e3:.1f} ms, "
              f"minimal jitted loop (prefill and one step) {minimal_prefill * 1e3:.1f} ms")
        if "transformers generate" in steps:
            print(f"  engine / transformers: decode {steps['transformers generate'] / steps['engine, greedy']:.1f}x, "
                  f"prefill + decode {whole['transformers generate'] / whole['engine, greedy']:.1f}x")
        print(f"  ({time.perf_counter() - start:.0f} s for this batch size, compiles included)", flush=True)


if __name__ == "__main__":
    main()

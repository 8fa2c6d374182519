"""The GRPO algorithm core: advantage estimators, chunked token log-probs, the policy loss.

Small pure functions; the config selects an advantage estimator and a loss aggregation by
name from the registries below (as tunix `rl/algo_core.py` does), so a new variant is one
function and one registry entry, never a new code path in the trainer.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

# Added to the group std so a zero-variance group (all rollouts right or all wrong) gives zero
# advantages instead of 0/0.
ADV_EPS = 1e-6


# ----------------------------------------------------------------------------- advantages

def grpo_advantages(rewards: jax.Array) -> jax.Array:
    """(r - group mean) / (group std + eps), the GRPO estimator.

    The std is the population std (ddof=0), as in veRL; with G=4 the unbiased std would be
    sqrt(4/3) larger and every advantage that much smaller.
    """
    mean = rewards.mean(axis=-1, keepdims=True)
    std = rewards.std(axis=-1, keepdims=True)
    return (rewards - mean) / (std + ADV_EPS)


def drgrpo_advantages(rewards: jax.Array) -> jax.Array:
    """r - group mean (Dr. GRPO): no std division, which favours easy and hard groups alike."""
    return rewards - rewards.mean(axis=-1, keepdims=True)


def rloo_advantages(rewards: jax.Array) -> jax.Array:
    """r - mean of the other G-1 rollouts (leave-one-out baseline, unbiased)."""
    g = rewards.shape[-1]
    if g < 2:
        raise ValueError(f"rloo needs at least 2 rollouts per group, got {g}.")
    others = (rewards.sum(axis=-1, keepdims=True) - rewards) / (g - 1)
    return rewards - others


ADVANTAGES: dict[str, Callable[[jax.Array], jax.Array]] = {
    "grpo": grpo_advantages,
    "drgrpo": drgrpo_advantages,
    "rloo": rloo_advantages,
}


def advantages(name: str, rewards: jax.Array) -> jax.Array:
    """Advantages `[num_groups, G]` (float32) of rewards `[num_groups, G]` by estimator name."""
    if name not in ADVANTAGES:
        raise ValueError(f"Unknown advantage estimator {name!r}; known: {sorted(ADVANTAGES)}.")
    return ADVANTAGES[name](jnp.asarray(rewards, jnp.float32))


# ------------------------------------------------------------------- chunked log-probs

def token_logprobs(hidden: jax.Array, kernel: jax.Array, targets: jax.Array, *,
                   chunk_size: int) -> tuple[jax.Array, jax.Array]:
    """log softmax(hidden @ kernel)[target] and the entropy of that distribution, per token.

    hidden [B, T, D] (any float dtype), kernel [D, V] (the LM head; `embed.T` when tied),
    targets [B, T] int in [0, V) (padding positions may hold any valid id; mask them later).
    Returns (logprobs, entropy), both [B, T] float32.

    The full [B, T, V] logits never exist (DESIGN §5: 8192 x 152k per sequence): a scan over
    vocabulary chunks keeps an online logsumexp, the target logit and an online entropy, and
    its body is rematerialised so the backward pass stores only the [B, T] carries per chunk,
    not the chunk logits. When V is not a multiple of chunk_size the last chunk starts at
    V - chunk_size (no padded copy of the kernel) and masks the columns already counted.
    """
    vocab = kernel.shape[1]
    size = min(chunk_size, vocab)
    num_chunks = -(-vocab // size)
    batch_shape = targets.shape

    @jax.checkpoint
    def body(carry, i):
        run_max, sum_exp, sum_exp_shifted, target_logit = carry
        nominal = i * size                          # first column this chunk is new for
        start = jnp.minimum(nominal, vocab - size)  # where the slice actually starts
        chunk = jax.lax.dynamic_slice_in_dim(kernel, start, size, axis=1)
        logits = jnp.einsum("btd,dc->btc", hidden, chunk, preferred_element_type=jnp.float32)
        fresh = start + jnp.arange(size) >= nominal  # [C]: columns not seen in earlier chunks
        # The result does not depend on the shift, so its gradient is exactly zero: stop it.
        new_max = jax.lax.stop_gradient(
            jnp.maximum(run_max, jnp.max(jnp.where(fresh, logits, -jnp.inf), axis=-1)))
        shifted = logits - new_max[..., None]
        p = jnp.where(fresh, jnp.exp(jnp.where(fresh, shifted, 0.0)), 0.0)
        rescale = jnp.exp(run_max - new_max)
        # Entropy via E[l - m] under the unnormalised weights, re-based when the max moves.
        sum_exp_shifted = (rescale * (sum_exp_shifted + (run_max - new_max) * sum_exp)
                           + jnp.sum(p * shifted, axis=-1))
        sum_exp = rescale * sum_exp + jnp.sum(p, axis=-1)
        local = targets - start
        hit = (targets >= nominal) & (targets < nominal + size) & (targets < vocab)
        picked = jnp.take_along_axis(logits, jnp.clip(local, 0, size - 1)[..., None], axis=-1)[..., 0]
        target_logit = target_logit + jnp.where(hit, picked, 0.0)
        return (new_max, sum_exp, sum_exp_shifted, target_logit), None

    zeros = jnp.zeros(batch_shape, jnp.float32)
    # A finite floor (not -inf) keeps (run_max - new_max) * sum_exp at 0 * finite on chunk 0.
    init = (jnp.full(batch_shape, -1e30, jnp.float32), zeros, zeros, zeros)
    (run_max, sum_exp, sum_exp_shifted, target_logit), _ = jax.lax.scan(
        body, init, jnp.arange(num_chunks))
    log_z = run_max + jnp.log(sum_exp)
    entropy = jnp.log(sum_exp) - sum_exp_shifted / sum_exp
    return target_logit - log_z, entropy


# ------------------------------------------------------------------------ aggregation

def token_mean(values: jax.Array, weights: jax.Array, seq: jax.Array, num_seqs: int,
               norm_length: float | None) -> jax.Array:
    """Sum over all loss tokens / number of loss tokens (DAPO): long answers weigh more."""
    del seq, num_seqs, norm_length
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _per_sequence(values: jax.Array, weights: jax.Array, seq: jax.Array, num_seqs: int
                  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-sequence loss sums and token counts [num_seqs], which sequences exist, how many."""
    sums = jax.ops.segment_sum((values * weights).ravel(), seq.ravel(), num_segments=num_seqs)
    counts = jax.ops.segment_sum(weights.ravel(), seq.ravel(), num_segments=num_seqs)
    present = counts > 0
    return sums, counts, present, jnp.maximum(jnp.sum(present), 1)


def seq_mean_token_mean(values: jax.Array, weights: jax.Array, seq: jax.Array, num_seqs: int,
                        norm_length: float | None) -> jax.Array:
    """Mean over tokens within each sequence, then over sequences (original GRPO)."""
    del norm_length
    sums, counts, present, n = _per_sequence(values, weights, seq, num_seqs)
    return jnp.sum(jnp.where(present, sums / jnp.maximum(counts, 1.0), 0.0)) / n


def seq_mean_token_sum_norm(values: jax.Array, weights: jax.Array, seq: jax.Array, num_seqs: int,
                            norm_length: float | None) -> jax.Array:
    """Per-sequence sum / constant norm_length, mean over sequences (Dr. GRPO: no length bias)."""
    if norm_length is None:
        raise ValueError("seq_mean_token_sum_norm needs norm_length (e.g. the max response length).")
    sums, _, _, n = _per_sequence(values, weights, seq, num_seqs)
    return jnp.sum(sums) / norm_length / n


AGGREGATIONS: dict[str, Callable[..., jax.Array]] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


# ------------------------------------------------------------------------ policy loss

def _masked_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _k3(log_ratio: jax.Array) -> jax.Array:
    """k3 estimator of KL(p || q) from log(q/p) on samples of p: nonnegative, unbiased."""
    return jnp.exp(log_ratio) - log_ratio - 1.0


def policy_loss(logprobs: jax.Array, old_logprobs: jax.Array, advantages: jax.Array,
                mask: jax.Array, *, segment_ids: jax.Array, clip_low: float = 0.2,
                clip_high: float = 0.28, kl_coef: float = 0.0, ref_logprobs: jax.Array | None = None,
                sampler_logprobs: jax.Array | None = None, is_cap: float | None = None,
                aggregation: str = "token_mean", max_segments: int | None = None,
                norm_length: float | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped token-level surrogate (+ k3 KL to a reference), aggregated by name.

    All inputs [B, T]; `advantages` already broadcast to tokens; `mask` the loss mask
    (assistant tokens); `segment_ids` the packing ids (0 padding, 1..max_segments per row).
    A sequence is a (row, segment id) pair; `max_segments` (static, default T) bounds the ids.

    - ratio = exp(logprobs - old_logprobs) is clipped to [1 - clip_low, 1 + clip_high]
      (DAPO clip-higher) and the pessimistic branch taken.
    - With `ref_logprobs`, kl_coef * k3 with k3 = exp(ref - lp) - (ref - lp) - 1 is added.
    - With `sampler_logprobs` and `is_cap`, the surrogate (not the KL term, as in veRL's TIS)
      is multiplied by the truncated importance weight min(exp(old - sampler), is_cap),
      held constant: it corrects for the sampler's numerics differing from the trainer's.

    Returns (loss, metrics); metrics are token means over loss tokens.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"Unknown aggregation {aggregation!r}; known: {sorted(AGGREGATIONS)}.")
    if ref_logprobs is None and kl_coef != 0.0:
        raise ValueError("kl_coef is nonzero but no ref_logprobs were given.")
    rows, length = logprobs.shape
    max_segments = length if max_segments is None else max_segments
    valid = (jnp.asarray(mask) > 0) & (segment_ids > 0)
    weights = valid.astype(jnp.float32)
    seq = jnp.arange(rows)[:, None] * (max_segments + 1) + segment_ids
    num_seqs = rows * (max_segments + 1)

    # Padding may hold garbage log-probs (-inf): zero the differences there so neither the loss
    # nor its gradient picks up inf * 0.
    def log_diff(a, b):
        return jnp.where(valid, a - b, 0.0)

    log_ratio = log_diff(logprobs, old_logprobs)
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = jnp.maximum(-advantages * ratio, -advantages * clipped)

    is_weight = jnp.ones_like(ratio)
    if sampler_logprobs is not None and is_cap is not None:
        is_weight = jax.lax.stop_gradient(
            jnp.minimum(jnp.exp(log_diff(old_logprobs, sampler_logprobs)), is_cap))
        per_token = per_token * is_weight

    metrics = {}
    if ref_logprobs is not None:
        kl_ref = _k3(log_diff(ref_logprobs, logprobs))
        per_token = per_token + kl_coef * kl_ref
        metrics["kl_ref"] = _masked_mean(kl_ref, weights)

    loss = AGGREGATIONS[aggregation](per_token, weights, seq, num_seqs, norm_length)
    metrics.update(
        clip_low_frac=_masked_mean((ratio < 1.0 - clip_low) & (advantages < 0), weights),
        clip_high_frac=_masked_mean((ratio > 1.0 + clip_high) & (advantages > 0), weights),
        ratio_mean=_masked_mean(ratio, weights),
        approx_kl=_masked_mean(_k3(log_ratio), weights),  # KL(old || new), samples from old
        is_weight_mean=_masked_mean(is_weight, weights),
        num_tokens=jnp.sum(weights),
    )
    return loss, jax.tree.map(jax.lax.stop_gradient, metrics)

"""Advantages, chunked log-probs and the policy loss against hand-computed numbers."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gog_jax.train import losses

# ----------------------------------------------------------------------------- advantages


def test_advantages_hand_computed():
    rewards = np.array([[1.0, 0.0, 0.0, 1.0], [0.2, 0.8, 0.5, 0.5]], np.float32)
    np.testing.assert_allclose(losses.advantages("grpo", rewards)[0], [1, -1, -1, 1], atol=1e-5)
    # Second group: mean 0.5, population std sqrt(0.18 / 4) = 0.212132.
    np.testing.assert_allclose(losses.advantages("grpo", rewards)[1],
                               [-1.414214, 1.414214, 0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(losses.advantages("drgrpo", rewards),
                               [[0.5, -0.5, -0.5, 0.5], [-0.3, 0.3, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(losses.advantages("rloo", rewards)[0],
                               [2 / 3, -2 / 3, -2 / 3, 2 / 3], atol=1e-6)
    # 0.2 - mean(0.8, 0.5, 0.5) = -0.4.
    np.testing.assert_allclose(losses.advantages("rloo", rewards)[1], [-0.4, 0.4, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("name", sorted(losses.ADVANTAGES))
def test_zero_variance_group_gives_zeros(name):
    adv = losses.advantages(name, jnp.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    assert adv.shape == (2, 4) and adv.dtype == jnp.float32
    np.testing.assert_array_equal(adv, np.zeros((2, 4)))


def test_unknown_advantage_lists_known_names():
    with pytest.raises(ValueError, match="drgrpo.*grpo.*rloo"):
        losses.advantages("ppo", np.zeros((1, 4)))


# --------------------------------------------------------------------- chunked log-probs

B, T, D, V = 2, 8, 4, 50


def _inputs():
    k = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(k[0], (B, T, D)) * 2.0
    kernel = jax.random.normal(k[1], (D, V))
    targets = jax.random.randint(k[2], (B, T), 0, V)
    return hidden, kernel, targets


def _naive(hidden, kernel, targets):
    logp = jax.nn.log_softmax(jnp.einsum("btd,dv->btv", hidden, kernel))
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0], entropy


def _objective(fn, targets):
    """A scalar mixing both outputs with distinct per-token weights, so every grad path counts."""
    def f(hidden, kernel):
        logprobs, entropy = fn(hidden, kernel, targets)
        w = jnp.linspace(-1.0, 1.0, B * T).reshape(B, T)
        return jnp.sum(w * logprobs) + 0.3 * jnp.sum(w * entropy)
    return f


@pytest.mark.parametrize("chunk_size", [16, 10, 7, 50, 64])  # 16, 7: V not divisible
def test_token_logprobs_match_full_logits(chunk_size):
    hidden, kernel, targets = _inputs()
    chunked = functools.partial(losses.token_logprobs, chunk_size=chunk_size)
    logprobs, entropy = chunked(hidden, kernel, targets)
    want_logprobs, want_entropy = _naive(hidden, kernel, targets)
    assert logprobs.dtype == entropy.dtype == jnp.float32
    np.testing.assert_allclose(logprobs, want_logprobs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(entropy, want_entropy, rtol=1e-5, atol=1e-5)
    grads = jax.grad(_objective(chunked, targets), argnums=(0, 1))(hidden, kernel)
    want = jax.grad(_objective(_naive, targets), argnums=(0, 1))(hidden, kernel)
    for got, ref in zip(grads, want):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def _largest_intermediate(jaxpr) -> int:
    """Most elements of any value in a jaxpr, including scan/remat/pjit sub-jaxprs."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            largest = max(largest, math.prod(getattr(var.aval, "shape", ())))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    largest = max(largest, _largest_intermediate(sub))
    return largest


def test_grad_never_materialises_full_logits():
    hidden, kernel, targets = _inputs()  # B*T = 16 > D = 4: the [D, V] kernel grad is smaller
    chunked = functools.partial(losses.token_logprobs, chunk_size=16)
    grad_jaxpr = jax.make_jaxpr(jax.grad(_objective(chunked, targets), argnums=(0, 1)))
    assert _largest_intermediate(grad_jaxpr(hidden, kernel).jaxpr) < B * T * V
    # The check can fail: the naive computation (and a scan without remat, whose stacked
    # [chunks, B, T, C] residuals are larger still) trips it.
    naive_jaxpr = jax.make_jaxpr(jax.grad(_objective(_naive, targets), argnums=(0, 1)))
    assert _largest_intermediate(naive_jaxpr(hidden, kernel).jaxpr) >= B * T * V


def test_token_logprobs_bf16_inputs():
    hidden, kernel, targets = _inputs()
    hidden, kernel = hidden.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    logprobs, _ = losses.token_logprobs(hidden, kernel, targets, chunk_size=16)
    want, _ = _naive(hidden.astype(jnp.float32), kernel.astype(jnp.float32), targets)
    assert logprobs.dtype == jnp.float32
    np.testing.assert_allclose(logprobs, want, atol=1e-4)  # bf16 products, fp32 accumulation
    grad = jax.grad(lambda h: losses.token_logprobs(h, kernel, targets, chunk_size=16)[0].sum())(hidden)
    assert grad.dtype == jnp.bfloat16


# --------------------------------------------------------------------------- policy loss

def _single_row():
    """Ratios [1, 1.5, 0.5, 0.7, 2]; the last token is masked and its old log-prob is -inf."""
    ratios = np.array([1.0, 1.5, 0.5, 0.7, 2.0])
    logprobs = jnp.asarray(np.log(ratios)[None], jnp.float32)
    old = jnp.array([[0.0, 0.0, 0.0, 0.0, -jnp.inf]])
    adv = jnp.array([[1.0, 1.0, -1.0, 1.0, 3.0]])
    mask = jnp.array([[1, 1, 1, 1, 0]])
    return logprobs, old, adv, mask, jnp.ones((1, 5), jnp.int32)


def test_clipped_surrogate_hand_computed():
    logprobs, old, adv, mask, seg = _single_row()
    loss, metrics = losses.policy_loss(logprobs, old, adv, mask, segment_ids=seg)
    # Per token: -1 (ratio 1); -1.28 (1.5 clipped to 1 + 0.28, A > 0); +0.8 (0.5 clipped to
    # 1 - 0.2, A < 0); -0.7 (0.7 with A > 0 is the pessimistic, unclipped branch).
    np.testing.assert_allclose(loss, (-1.0 - 1.28 + 0.8 - 0.7) / 4, rtol=1e-6)
    np.testing.assert_allclose(metrics["clip_high_frac"], 0.25)
    np.testing.assert_allclose(metrics["clip_low_frac"], 0.25)
    np.testing.assert_allclose(metrics["ratio_mean"], (1.0 + 1.5 + 0.5 + 0.7) / 4, rtol=1e-6)
    kl = [r - math.log(r) - 1 for r in (1.0, 1.5, 0.5, 0.7)]
    np.testing.assert_allclose(metrics["approx_kl"], sum(kl) / 4, rtol=1e-5)
    np.testing.assert_allclose(metrics["is_weight_mean"], 1.0)
    assert metrics["num_tokens"] == 4
    assert "kl_ref" not in metrics


def test_clipped_tokens_and_masked_tokens_have_zero_gradient():
    logprobs, old, adv, mask, seg = _single_row()
    grad = jax.grad(lambda lp: losses.policy_loss(lp, old, adv, mask, segment_ids=seg)[0])(logprobs)
    # d/dlp of -A * ratio / 4 = -A * ratio / 4 on unclipped tokens; 0 where clipped or masked.
    np.testing.assert_allclose(grad, [[-0.25, 0.0, 0.0, -0.175, 0.0]], rtol=1e-6)


def _packed():
    """Two rows; ratio 1 everywhere, so each token's loss is -A.

    row 0: segment 1 (A=1, 2 tokens), segment 2 (A=-2, 3 tokens, one outside the loss mask),
    padding (segment 0, A=100, mask 1: must still be ignored);
    row 1: segment 1 (A=3, 3 tokens), segment 2 (A=0.5, 1 token), padding.
    """
    seg = jnp.array([[1, 1, 2, 2, 2, 0], [1, 1, 1, 2, 0, 0]])
    adv = jnp.array([[1.0, 1.0, -2.0, -2.0, -2.0, 100.0], [3.0, 3.0, 3.0, 0.5, 100.0, 100.0]])
    mask = jnp.array([[1, 1, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    zeros = jnp.zeros((2, 6))
    return zeros, zeros, adv, mask, seg


@pytest.mark.parametrize("aggregation, norm_length, want", [
    # Sequence sums -2, 4, -9, -0.5 over 2, 2, 3, 1 tokens.
    ("token_mean", None, -7.5 / 8),
    ("seq_mean_token_mean", None, (-1.0 + 2.0 - 3.0 - 0.5) / 4),
    ("seq_mean_token_sum_norm", 4.0, (-2.0 + 4.0 - 9.0 - 0.5) / 4.0 / 4),
])
@pytest.mark.parametrize("max_segments", [None, 2])
def test_aggregation_on_packed_batch(aggregation, norm_length, want, max_segments):
    logprobs, old, adv, mask, seg = _packed()
    fn = jax.jit(functools.partial(losses.policy_loss, aggregation=aggregation,
                                   norm_length=norm_length, max_segments=max_segments))
    loss, metrics = fn(logprobs, old, adv, mask, segment_ids=seg)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert metrics["num_tokens"] == 8


def test_masked_and_padding_tokens_have_zero_gradient_in_every_mode():
    logprobs, old, adv, mask, seg = _packed()
    for aggregation in losses.AGGREGATIONS:
        grad = jax.grad(lambda lp: losses.policy_loss(
            lp, old, adv, mask, segment_ids=seg, aggregation=aggregation, norm_length=4.0)[0])(logprobs)
        loss_tokens = np.asarray((mask > 0) & (seg > 0))
        np.testing.assert_array_equal(np.asarray(grad)[~loss_tokens], 0.0)
        assert np.all(np.asarray(grad)[loss_tokens] != 0.0)


def test_kl_to_reference():
    lp = jnp.zeros((1, 2))
    ref = jnp.log(jnp.array([[2.0, 0.5]]))
    adv, mask, seg = jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.ones((1, 2), jnp.int32)

    def loss_fn(lp):
        return losses.policy_loss(lp, lp, adv, mask, segment_ids=seg, kl_coef=0.1, ref_logprobs=ref)

    loss, metrics = loss_fn(lp)
    # k3 = e^d - d - 1 with d = ref - lp: (2 - ln 2 - 1) + (0.5 + ln 2 - 1) = 0.5 over 2 tokens.
    np.testing.assert_allclose(metrics["kl_ref"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(loss, 0.1 * 0.25, rtol=1e-6)
    # d k3 / d lp = 1 - e^d = [-1, 0.5]; times kl_coef / 2 tokens.
    np.testing.assert_allclose(jax.grad(lambda x: loss_fn(x)[0])(lp), [[-0.05, 0.025]], rtol=1e-6)


def test_kl_coef_without_reference_is_an_error():
    lp = jnp.zeros((1, 2))
    with pytest.raises(ValueError, match="ref_logprobs"):
        losses.policy_loss(lp, lp, lp, lp, segment_ids=jnp.ones((1, 2), jnp.int32), kl_coef=0.1)


def test_truncated_importance_weight():
    lp = jnp.zeros((1, 3))
    sampler = jnp.log(jnp.array([[1.0, 0.25, 2.0]]))  # exp(old - sampler) = [1, 4, 0.5]
    adv, mask, seg = jnp.ones((1, 3)), jnp.ones((1, 3)), jnp.ones((1, 3), jnp.int32)

    def loss_fn(lp, sampler):
        return losses.policy_loss(lp, jnp.zeros((1, 3)), adv, mask, segment_ids=seg,
                                  sampler_logprobs=sampler, is_cap=2.0)

    loss, metrics = loss_fn(lp, sampler)
    np.testing.assert_allclose(loss, -(1.0 + 2.0 + 0.5) / 3, rtol=1e-6)  # 4 capped at 2
    np.testing.assert_allclose(metrics["is_weight_mean"], 3.5 / 3, rtol=1e-6)
    grad_lp, grad_sampler = jax.grad(lambda *a: loss_fn(*a)[0], argnums=(0, 1))(lp, sampler)
    np.testing.assert_allclose(grad_lp, [[-1 / 3, -2 / 3, -1 / 6]], rtol=1e-6)
    np.testing.assert_array_equal(grad_sampler, 0.0)  # the weight is held constant
    # Without a cap there is no correction.
    uncorrected, _ = losses.policy_loss(lp, lp, adv, mask, segment_ids=seg, sampler_logprobs=sampler)
    np.testing.assert_allclose(uncorrected, -1.0)


def test_bad_aggregation_arguments():
    lp, seg = jnp.zeros((1, 2)), jnp.ones((1, 2), jnp.int32)
    with pytest.raises(ValueError, match="seq_mean_token_mean"):
        losses.policy_loss(lp, lp, lp, lp, segment_ids=seg, aggregation="sum")
    with pytest.raises(ValueError, match="norm_length"):
        losses.policy_loss(lp, lp, lp, lp, segment_ids=seg, aggregation="seq_mean_token_sum_norm")

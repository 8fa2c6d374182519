"""Optimizer factory: schedule values, clipping, decay mask and accumulation on hand-computed numbers."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gog_jax.train import optim


@pytest.mark.parametrize("schedule,expected", [
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ("cosine", [0.0, 0.5, 1.0, 0.5, 0.0]),
])
def test_schedules(schedule, expected):
    fn = optim.schedule_fn(learning_rate=1.0, schedule=schedule, warmup_steps=2, total_steps=6)
    np.testing.assert_allclose([float(fn(s)) for s in (0, 1, 2, 4, 6)], expected, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Unknown schedule"):
        optim.schedule_fn(learning_rate=1.0, schedule="exp", warmup_steps=0, total_steps=5)
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.schedule_fn(learning_rate=1.0, warmup_steps=9, total_steps=5)


def _params():
    return {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}


def test_clip_and_decay_mask():
    tx = optim.make_optimizer(learning_rate=0.1, schedule="constant", warmup_steps=0, total_steps=10,
                              weight_decay=0.5, clip_norm=1.0)
    params = _params()
    grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.array([300.0, -400.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    # adam's first step is g / |g| = sign(g) whatever the clipping; decay only on the 2-D kernel
    np.testing.assert_allclose(updates["bias"], [-0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * np.ones((2, 2)), rtol=1e-6)
    clipped = optax.clip_by_global_norm(1.0).update(grads, None)[0]
    np.testing.assert_allclose(clipped["bias"], [0.6, -0.8], rtol=1e-6)


def test_accumulation_applies_the_mean_every_k_steps():
    def run(tx, grad_list):
        params = _params()
        state = tx.init(params)
        out = []
        for g in grad_list:
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
            out.append(params)
        return out

    kw = dict(learning_rate=0.1, schedule="constant", warmup_steps=0, total_steps=10, weight_decay=0.0,
              clip_norm=None, b1=0.0, b2=0.0, eps=0.0)  # plain normalised SGD: update = -lr * sign(g)
    g1 = {"kernel": jnp.full((2, 2), 1.0), "bias": jnp.array([1.0, -3.0])}
    g2 = {"kernel": jnp.full((2, 2), -3.0), "bias": jnp.array([1.0, 1.0])}
    accumulated = run(optim.make_optimizer(**kw, accumulate_steps=2), [g1, g2])
    np.testing.assert_array_equal(accumulated[0]["kernel"], np.ones((2, 2)))  # nothing applied yet
    single = run(optim.make_optimizer(**kw), [{k: (g1[k] + g2[k]) / 2 for k in g1}])[0]
    for k in single:
        np.testing.assert_allclose(accumulated[1][k], single[k], rtol=1e-6)


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_vision_lr_scale_scales_only_the_vision_tower(scale):
    tx = optim.make_optimizer(learning_rate=0.1, schedule="constant", warmup_steps=0, total_steps=10,
                              weight_decay=0.5, clip_norm=1.0, vision_lr_scale=scale)
    params = {"visual": _params(), "model": _params()}
    grads = {"visual": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.array([3.0, -1.0])},
             "model": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.array([3.0, -1.0])}}
    updates, _ = tx.update(grads, tx.init(params), params)
    # first adam step: -lr * (sign(g) + decay * p on kernels); the tower's is `scale` times that
    np.testing.assert_allclose(updates["model"]["kernel"], -0.1 * 1.5 * np.ones((2, 2)), rtol=1e-5)
    np.testing.assert_allclose(updates["model"]["bias"], [-0.1, 0.1], rtol=1e-5)
    for k in ("kernel", "bias"):
        np.testing.assert_allclose(updates["visual"][k], scale * np.asarray(updates["model"][k]), rtol=1e-6)

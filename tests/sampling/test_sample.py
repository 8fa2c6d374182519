"""The sampling functions against jax's own argmax and categorical, and hand-computed filters."""

import jax
import jax.numpy as jnp
import numpy as np

from gog_jax.sampling import programs
from gog_jax.sampling import sample as sample_lib


def test_first_argmax_equals_argmax_with_ties_and_masked_entries():
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 3, (64, 50)).astype(np.float32)  # many ties: the first maximum must win
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[0] = -np.inf  # a fully masked row still gives jnp.argmax's answer (index 0)
    np.testing.assert_array_equal(sample_lib.first_argmax(jnp.asarray(x)), jnp.argmax(x, axis=-1))


def test_sample_draws_what_jax_random_categorical_draws():
    """The rewritten Gumbel-max draw is bit-identical to `jax.random.categorical` per row, so a
    request's samples (and the main job's results) do not change with it; greedy rows take the argmax."""
    rng = np.random.default_rng(1)
    slots, vocab = 16, 300
    temperature = jnp.asarray([0.0, 0.7, 1.0, 1.3] * 4, jnp.float32)
    top_k = jnp.asarray([0] * 8 + [5] * 8, jnp.int32)
    top_p = jnp.ones((slots,), jnp.float32)
    for seed in range(5):
        logits = jnp.asarray(rng.normal(size=(slots, vocab)) * 3, jnp.float32)
        keys = programs.fold_in_keys(jax.random.key_data(jax.random.key(seed)), jnp.arange(slots, dtype=jnp.uint32))
        drawn = jax.jit(sample_lib.sample)(logits, keys, temperature, top_k, top_p)
        filtered = sample_lib.filter_logits(logits, top_k, top_p)
        scaled = filtered / jnp.where(temperature > 0, temperature, 1.0)[:, None]
        expected = jax.vmap(jax.random.categorical)(jax.random.wrap_key_data(keys), scaled)
        expected = jnp.where(temperature > 0, expected, jnp.argmax(logits, axis=-1))
        np.testing.assert_array_equal(drawn, expected)
        assert bool(jnp.all(jnp.take_along_axis(filtered, drawn[:, None], -1) > -jnp.inf))


def test_filter_logits_keeps_top_k_and_the_nucleus():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.2]] * 3, jnp.float32))
    kept = sample_lib.filter_logits(logits, jnp.asarray([1, 0, 0]), jnp.asarray([1.0, 0.6, 0.9]))
    np.testing.assert_array_equal(np.isfinite(kept), [[True, False, False], [True, True, False],
                                                      [True, True, True]])

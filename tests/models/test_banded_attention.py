"""Banded window attention (the vision tower's windowed layers) equals dense masked attention."""

import jax.numpy as jnp
import numpy as np
import pytest

from gog_jax.models.layers import attention
from gog_jax.models.qwen2_5_vl.vision import banded_attention

BLOCK = 16


def _both(rng, segments):
    """(banded, dense) attention of random q, k, v [len(segments), 2, 8] within `segments`."""
    q, k, v = (jnp.asarray(rng.standard_normal((len(segments), 2, 8)), jnp.float32) for _ in range(3))
    mask = jnp.asarray(segments[:, None] == segments[None, :])
    dense = attention(q[None], k[None], v[None], mask[None])[0]
    return np.asarray(banded_attention(q, k, v, jnp.asarray(segments), BLOCK)), np.asarray(dense)


@pytest.mark.parametrize("seed", range(4))
def test_banded_equals_dense_on_runs_of_at_most_a_block(seed):
    """Windows as contiguous runs of 1..BLOCK patches at any offset (so runs straddle blocks),
    then a padding tail of one segment longer than a block, P not a multiple of the block: every
    real patch's output equals dense attention's; padding rows stay finite."""
    rng = np.random.default_rng(seed)
    runs = rng.integers(1, BLOCK + 1, 12)
    segments = np.concatenate([np.full(n, i) for i, n in enumerate(runs)] + [np.full(2 * BLOCK + 5, -1)])
    banded, dense = _both(rng, segments)
    real = int(runs.sum())
    assert banded.shape == dense.shape
    np.testing.assert_allclose(banded[:real], dense[:real], atol=1e-6)
    assert np.isfinite(banded).all()


def test_a_run_longer_than_a_block_breaks_the_premise():
    """What the windows' bound buys: a segment of 3 blocks is not attended whole."""
    banded, dense = _both(np.random.default_rng(0), np.repeat(np.arange(3), [3 * BLOCK, 2, 4]))
    assert np.abs(banded - dense).max() > 1e-3

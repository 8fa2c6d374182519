"""Banded window attention (the vision tower's windowed layers) equals dense masked attention."""

import jax.numpy as jnp
import numpy as np
import pytest

from gog_jax.models import families
from gog_jax.models.layers import attention
from gog_jax.models.qwen2_5_vl import vision, vision_metadata
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


def test_the_tower_attends_in_bands_only_past_three_windows(monkeypatch):
    """Up to three windows' patches dense scores [P, P] are no more than the bands' [P, 3 x window],
    so the tower's windowed blocks go dense there and in bands past it (tiny: 16-patch windows)."""
    family, shapes = families.preset("tiny")
    model = families.build(families.named(family).model_config(shapes))
    cfg = model.config.vision
    calls = []
    monkeypatch.setattr(vision, "banded_attention", lambda *a: calls.append(a[0].shape[0]) or banded_attention(*a))
    windowed = cfg.depth - len(cfg.fullatt_block_indexes)
    rng = np.random.default_rng(0)
    for grid, banded in (([1, 4, 12], False), ([1, 4, 14], True)):  # 48 = 3 windows, 56 patches
        grids = np.array([grid])
        pixels = rng.standard_normal((int(np.prod(grid)), 3 * 2 * 14 * 14)).astype(np.float32)
        model.encode_images(pixels, vision_metadata(grids, cfg))
        assert calls == ([int(np.prod(grid))] * windowed if banded else []), (grid, calls)
        calls.clear()

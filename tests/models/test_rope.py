"""Host-side M-RoPE ids equal transformers' get_rope_index; incremental equals full recomputation."""

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from gog_jax.models.qwen2_5_vl import rope
from tests.models import hf_reference as ref

MERGE = 2


def test_matches_transformers_get_rope_index():
    hf = ref.hf_model(ref.hf_config())
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids, mask, grids = ref.random_batch(rng)
        t_ids = torch.as_tensor(ids)
        theirs, their_deltas = hf.model.get_rope_index(
            t_ids, mm_token_type_ids=(t_ids == ref.IMAGE_TOKEN).int(),
            image_grid_thw=torch.as_tensor(grids) if len(grids) else None, attention_mask=torch.as_tensor(mask))
        ours, deltas = rope.get_rope_index(ids, grids, mask, ref.IMAGE_TOKEN, MERGE)
        np.testing.assert_array_equal(ours, theirs.numpy())
        np.testing.assert_array_equal(deltas, their_deltas.numpy().reshape(-1))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), data=st.data())
def test_incremental_equals_full_for_every_split(seed, data):
    rng = np.random.default_rng(seed)
    grids = np.array([[1, 2 * rng.integers(1, 4), 2 * rng.integers(1, 4)] for _ in range(rng.integers(0, 4))],
                     np.int64).reshape(-1, 3)
    seq = ref.image_sequence(rng, grids, rng.integers(1, 5, len(grids) + 1))
    full, _ = rope.get_rope_index(seq[None], grids, None, ref.IMAGE_TOKEN, MERGE)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(seq)), max_size=4)))
    positions, state = ref.chunked_positions(rope, seq, grids, cuts)
    np.testing.assert_array_equal(positions, full[:, 0])
    assert state.next_pos == full.max(initial=-1) + 1 and state.image_grid is None


def test_mismatched_image_tokens_are_reported():
    seq = ref.image_sequence(np.random.default_rng(1), np.array([[1, 4, 4]]), [2, 2])
    import pytest
    with pytest.raises(ValueError, match="does not match image_grid_thw"):
        rope.get_rope_index(seq[None], np.array([[1, 4, 6]]), None, ref.IMAGE_TOKEN, MERGE)

"""Qwen3-VL M-RoPE ids: ours equal transformers' Qwen3-VL get_rope_index, in full and chunk by chunk."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from gog_jax.models.qwen3_vl import rope
from tests.models import hf_reference as ref


@pytest.fixture(scope="module")
def hf_rope_index():
    model = ref.hf_model(ref.qwen3_config())

    def index(ids, mask, grids):
        t_ids = torch.as_tensor(ids)
        positions, deltas = model.model.get_rope_index(
            t_ids, mm_token_type_ids=(t_ids == ref.IMAGE_TOKEN).int(),
            image_grid_thw=torch.as_tensor(grids) if len(grids) else None,
            attention_mask=None if mask is None else torch.as_tensor(mask))
        return positions.numpy(), deltas.numpy().reshape(-1)

    return index


def test_matches_transformers_get_rope_index(hf_rope_index):
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids, mask, grids = ref.random_batch(rng)
        theirs, their_deltas = hf_rope_index(ids, mask, grids)
        ours, deltas = rope.get_rope_index(ids, grids, mask, ref.IMAGE_TOKEN, 2)
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(deltas, their_deltas)
        assert len(grids) == 0 or (ours[1:] != ours[0]).any()  # really multimodal positions


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), data=st.data())
def test_chunk_by_chunk_equals_transformers_full(hf_rope_index, seed, data):
    rng = np.random.default_rng(seed)
    grids = np.array([[1, 2 * rng.integers(1, 5), 2 * rng.integers(1, 5)] for _ in range(rng.integers(0, 4))],
                     np.int64).reshape(-1, 3)
    seq = ref.image_sequence(rng, grids, rng.integers(1, 5, len(grids) + 1))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(seq)), max_size=5)))
    positions, state = ref.chunked_positions(rope, seq, grids, cuts)
    theirs, deltas = hf_rope_index(seq[None], None, grids)
    np.testing.assert_array_equal(positions, theirs[:, 0])
    assert state.image_grid is None and state.next_pos == len(seq) + deltas[0]

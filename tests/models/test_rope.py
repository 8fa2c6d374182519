"""Host-side M-RoPE ids equal transformers' get_rope_index; incremental equals full recomputation."""

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from gog_jax.models.qwen2_5_vl import rope
from tests.models import hf_reference as ref

MERGE = 2


def _random_batch(rng):
    grids = [np.array([[1, 2 * rng.integers(1, 5), 2 * rng.integers(1, 5)] for _ in range(rng.integers(0, 4))],
                      np.int64).reshape(-1, 3) for _ in range(3)]
    seqs = [ref.image_sequence(rng, g, rng.integers(1, 6, len(g) + 1)) for g in grids]
    length = max(map(len, seqs)) + 2
    ids, mask = np.zeros((3, length), np.int64), np.zeros((3, length), np.int64)
    for row, seq in enumerate(seqs):
        start = length - len(seq) if row % 2 else 0  # left- and right-padded rows
        ids[row, start:start + len(seq)], mask[row, start:start + len(seq)] = seq, 1
    return ids, mask, np.concatenate(grids)


def test_matches_transformers_get_rope_index():
    hf = ref.hf_model(ref.hf_config())
    rng = np.random.default_rng(0)
    for _ in range(20):
        ids, mask, grids = _random_batch(rng)
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
    state, parts, used = rope.RopeState(), [], 0
    for start, stop in zip([0] + cuts, cuts + [len(seq)]):
        chunk = seq[start:stop]
        # images that begin in this chunk: their first pad token lies inside it
        begins = np.flatnonzero((chunk == ref.IMAGE_TOKEN) & (np.r_[seq[start - 1] if start else -1, chunk[:-1]]
                                                             != ref.IMAGE_TOKEN))
        positions, state = rope.chunk_positions(chunk, grids[used:used + len(begins)], state, ref.IMAGE_TOKEN, MERGE)
        used += len(begins)
        parts.append(positions)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), full[:, 0])
    assert state.next_pos == full.max(initial=-1) + 1 and state.image_grid is None


def test_mismatched_image_tokens_are_reported():
    seq = ref.image_sequence(np.random.default_rng(1), np.array([[1, 4, 4]]), [2, 2])
    import pytest
    with pytest.raises(ValueError, match="does not match image_grid_thw"):
        rope.get_rope_index(seq[None], np.array([[1, 4, 6]]), None, ref.IMAGE_TOKEN, MERGE)

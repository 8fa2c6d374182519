"""Our Flax Qwen2.5-VL is the same function as transformers' on random tiny configs (fp32, 1e-4)."""

import numpy as np
import pytest
import torch

from tests.models import hf_reference as ref

TOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    hf = ref.hf_model(ref.hf_config())
    return hf, ref.ours_from_hf(hf)


def _pixels(rng, grids):
    return rng.standard_normal((int(np.sum(np.prod(grids, -1))), 3 * 2 * 14 * 14)).astype(np.float32)


def _assert_close(ours, theirs, mask=None):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    diff = np.abs(ours - theirs)
    if mask is not None:
        diff = diff[np.asarray(mask).astype(bool)]
    assert diff.max() <= TOL, diff.max()


def test_text_only(pair):
    hf, ours = pair
    ids = np.random.default_rng(0).integers(10, 256, (3, 17))
    _assert_close(ours(ids), ref.hf_logits(hf, ids))


def test_one_image_and_the_image_matters(pair):
    hf, ours = pair
    rng = np.random.default_rng(1)
    grids = np.array([[1, 8, 12]])
    ids = ref.image_sequence(rng, grids, [5, 7])[None]
    pixels = _pixels(rng, grids)
    logits = ours(ids, pixel_values=pixels, image_grid_thw=grids)
    _assert_close(logits, ref.hf_logits(hf, ids, pixel_values=pixels, image_grid_thw=grids))
    other = ours(ids, pixel_values=pixels + 1.0, image_grid_thw=grids)
    assert np.abs(np.asarray(other)[0, -1] - np.asarray(logits)[0, -1]).max() > 1e-3


def test_three_images_of_different_sizes(pair):
    hf, ours = pair
    rng = np.random.default_rng(2)
    grids = np.array([[1, 4, 4], [1, 10, 6], [1, 6, 14]])
    ids = ref.image_sequence(rng, grids, [3, 2, 4, 5])[None]
    pixels = _pixels(rng, grids)
    _assert_close(ours(ids, pixel_values=pixels, image_grid_thw=grids),
                  ref.hf_logits(hf, ids, pixel_values=pixels, image_grid_thw=grids))


def test_batch_with_left_and_right_padding(pair):
    hf, ours = pair
    rng = np.random.default_rng(3)
    grids = np.array([[1, 4, 8], [1, 6, 6]])
    first = ref.image_sequence(rng, grids[:1], [2, 3])
    second = ref.image_sequence(rng, grids[1:], [6, 9])
    length = max(len(first), len(second)) + 3
    for side in ("left", "right"):
        ids = np.zeros((2, length), np.int64)
        mask = np.zeros((2, length), np.int64)
        for row, seq in enumerate((first, second)):
            where = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
            ids[row, where], mask[row, where] = seq, 1
        pixels = _pixels(rng, grids)
        theirs = ref.hf_logits(hf, ids, mask, pixels, grids)
        _assert_close(ours(ids, attention_mask=mask, pixel_values=pixels, image_grid_thw=grids), theirs, mask)


@pytest.mark.parametrize("window_size,fullatt,depth", [(28, (0, 2), 3), (112, (0,), 2), (56, (), 2)])
def test_vision_window_and_full_attention_configs(window_size, fullatt, depth):
    hf = ref.hf_model(ref.hf_config(window_size=window_size, fullatt=fullatt, depth=depth), seed=4)
    ours = ref.ours_from_hf(hf)
    rng = np.random.default_rng(4)
    grids = np.array([[1, 10, 14], [1, 4, 6]])
    pixels = _pixels(rng, grids)
    from gog_jax.models.qwen2_5_vl import vision_metadata
    features = ours.encode_images(pixels, vision_metadata(grids, ours.config.vision))
    with torch.no_grad():
        theirs = hf.model.visual(torch.as_tensor(pixels), grid_thw=torch.as_tensor(grids)).pooler_output
    _assert_close(features, theirs.numpy())
    ids = ref.image_sequence(rng, grids, [2, 3, 2])[None]
    _assert_close(ours(ids, pixel_values=pixels, image_grid_thw=grids),
                  ref.hf_logits(hf, ids, pixel_values=pixels, image_grid_thw=grids))


@pytest.mark.parametrize("tie", [True, False])
def test_tied_and_untied_embeddings(tie):
    hf = ref.hf_model(ref.hf_config(tie=tie), seed=5)
    ours = ref.ours_from_hf(hf)
    assert (ours.lm_head is None) == tie
    ids = np.random.default_rng(5).integers(10, 256, (2, 9))
    _assert_close(ours(ids), ref.hf_logits(hf, ids))


def test_bfloat16_within_2e2_of_float32(pair):
    hf, ours = pair
    ours_bf16 = ref.ours_from_hf(hf, dtype="bfloat16")
    rng = np.random.default_rng(6)
    grids = np.array([[1, 6, 8]])
    ids = ref.image_sequence(rng, grids, [4, 6])[None]
    pixels = _pixels(rng, grids)
    full = np.asarray(ours(ids, pixel_values=pixels, image_grid_thw=grids))
    half = np.asarray(ours_bf16(ids, pixel_values=pixels, image_grid_thw=grids))
    assert ours_bf16.model.embed_tokens.dtype == np.dtype("bfloat16")
    assert np.linalg.norm(half - full) / np.linalg.norm(full) <= 2e-2

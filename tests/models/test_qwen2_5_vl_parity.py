"""Our Flax Qwen2.5-VL is the same function as transformers' on random tiny configs (fp32, 1e-4)."""

import numpy as np
import pytest
import torch

from tests.models import hf_reference as ref



@pytest.fixture(scope="module")
def pair():
    hf = ref.hf_model(ref.hf_config())
    return hf, ref.ours_from_hf(hf)


def _pixels(rng, grids):
    return rng.standard_normal((int(np.sum(np.prod(grids, -1))), 3 * 2 * 14 * 14)).astype(np.float32)


_assert_close = ref.assert_close


def test_text_only(pair):
    hf, ours = pair
    ids = np.random.default_rng(0).integers(10, 256, (3, 17))
    _assert_close(ours(ids), ref.hf_logits(hf, ids))


def test_one_image_and_the_image_matters(pair):
    hf, ours = pair
    inputs, logits, _ = ref.check_images(hf, ours, np.random.default_rng(1), [[1, 8, 12]], [5, 7])
    other = ours(**{**inputs, "pixel_values": inputs["pixel_values"] + 1.0})
    assert np.abs(np.asarray(other)[0, -1] - logits[0, -1]).max() > 1e-3


def test_three_images_of_different_sizes(pair):
    ref.check_images(*pair, np.random.default_rng(2), [[1, 4, 4], [1, 10, 6], [1, 6, 14]], [3, 2, 4, 5])


def test_batch_with_left_and_right_padding(pair):
    ref.check_padded_batch(*pair, np.random.default_rng(3))


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
    ref.check_bfloat16(*pair, np.random.default_rng(6))

"""NumPy image processing equals transformers' Qwen2-VL image processor (with Qwen2.5-VL's and Qwen3-VL's settings)."""

import numpy as np
import pytest
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from gog_jax.processing import image


@pytest.mark.parametrize("size", [(168, 168), (56, 56), (30, 200), (333, 517), (1000, 90), (20, 20)])
def test_preprocess_matches_transformers(size):
    rng = np.random.default_rng(sum(size))
    picture = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    kwargs = dict(min_pixels=56 * 56, max_pixels=256 * 28 * 28)
    processor = Qwen2VLImageProcessorPil(**kwargs)
    theirs = processor(images=[picture], return_tensors="np")
    pixels, grid = image.preprocess(picture, **kwargs)
    np.testing.assert_array_equal(grid, theirs["image_grid_thw"][0])
    np.testing.assert_allclose(pixels, theirs["pixel_values"], atol=1e-5)


@pytest.mark.parametrize("size", [(168, 168), (30, 200), (333, 517), (20, 20)])
def test_qwen3_vl_settings_match_transformers(size):
    """Qwen3-VL's processor is Qwen2-VL's with 16-pixel patches and mean = std = 0.5."""
    rng = np.random.default_rng(sum(size) + 1)
    picture = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    pixels_range = dict(min_pixels=64 * 64, max_pixels=256 * 32 * 32)
    q3 = image.QWEN3_VL
    processor = Qwen2VLImageProcessorPil(patch_size=q3["patch_size"], merge_size=q3["merge_size"],
                                         temporal_patch_size=q3["temporal_patch_size"], image_mean=list(q3["mean"]),
                                         image_std=list(q3["std"]), **pixels_range)
    theirs = processor(images=[picture], return_tensors="np")
    pixels, grid = image.preprocess(picture, **q3, **pixels_range)
    assert pixels.shape[1] == 3 * 2 * 16 * 16 and (grid[1:] % 2 == 0).all()
    np.testing.assert_array_equal(grid, theirs["image_grid_thw"][0])
    np.testing.assert_allclose(pixels, theirs["pixel_values"], atol=1e-5)


def test_batch_concatenates_like_transformers():
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(100, 60, 3), (60, 200, 3)]]
    theirs = Qwen2VLImageProcessorPil()(images=pictures, return_tensors="np")
    pixels, grids = image.preprocess_batch(pictures)
    np.testing.assert_array_equal(grids, theirs["image_grid_thw"])
    np.testing.assert_allclose(pixels, theirs["pixel_values"], atol=1e-5)


def test_smart_resize_matches_over_many_sizes():
    rng = np.random.default_rng(1)
    for h, w in rng.integers(10, 3000, (300, 2)):
        if max(h, w) / min(h, w) <= 200:
            assert image.smart_resize(int(h), int(w), 28, 3136, 1003520) == hf_smart_resize(int(h), int(w), 28,
                                                                                             3136, 1003520)
    with pytest.raises(ValueError, match="Aspect ratio"):
        image.smart_resize(10, 3000)


def test_snap_to_bucket_prefers_aspect_then_area():
    buckets = [(56, 56), (112, 112), (56, 112), (112, 56), (168, 168)]
    assert image.snap_to_bucket(60, 58, buckets) == (56, 56)
    assert image.snap_to_bucket(50, 120, buckets) == (56, 112)
    assert image.snap_to_bucket(400, 390, buckets) == (168, 168)


def test_bad_images_are_rejected_clearly():
    with pytest.raises(ValueError, match="uint8"):
        image.preprocess(np.zeros((28, 28, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\|4\]"):
        image.preprocess(np.zeros((28, 28, 5), np.uint8))

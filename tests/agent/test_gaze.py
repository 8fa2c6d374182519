import jax.numpy as jnp
import numpy as np
import pytest

from gog_jax.agent import gaze
from gog_jax.agent.protocol import ActionError

CFG = gaze.GazeConfig()  # Qwen2.5-VL defaults: absolute pixels of the smart-resized image
HW = (300, 400)  # original image; the model sees it as 308x392


def _resolve(box, hw=HW, cfg=CFG):
    return gaze.resolve_box(box, hw, cfg)


def test_frames_hand_computed():
    assert gaze.model_frame(*HW, CFG) == (308, 392)
    assert gaze.to_original((0, 0, 392, 308), HW, CFG) == pytest.approx((0, 0, 400, 300))
    assert gaze.to_original((98, 77, 196, 154), HW, CFG) == pytest.approx((100, 75, 200, 150))
    assert gaze.to_model((100, 75, 200, 150), HW, CFG) == (98.0, 77.0, 196.0, 154.0)
    rel = gaze.GazeConfig(relative_coords=True)
    assert gaze.model_frame(*HW, rel) == (1000, 1000)
    assert gaze.to_original((250, 500, 500, 1000), HW, rel) == pytest.approx((100, 150, 200, 300))
    assert _resolve((250, 500, 500, 1000), cfg=rel) == (100, 150, 200, 300)


def test_round_trip_model_original():
    rng = np.random.default_rng(0)
    for _ in range(50):
        box = np.sort(rng.uniform(0, 300, 4).reshape(2, 2), axis=0).T.reshape(-1)  # x1<x2, y1<y2
        back = gaze.to_model(gaze.to_original(box, HW, CFG), HW, CFG, integer=False)
        np.testing.assert_allclose(back, box, rtol=1e-9)


def test_valid_box_is_exact():
    assert _resolve((98, 77, 196, 154)) == (100, 75, 200, 150)


@pytest.mark.parametrize("box, expected", [
    ((-50, -20, 98, 77), (0, 0, 100, 75)),              # partly outside: clamped
    ((300, 200, 5000, 9000), (306, 194, 400, 300)),     # runs off the bottom-right
    ((-1e30, -1e30, 1e30, 1e30), (0, 0, 400, 300)),     # enormous: the whole image
    ((98, 77, 103, 82), (89, 63, 117, 91)),             # ~5x5 px -> 28x28 around the centre
    ((0, 0, 4, 4), (0, 0, 28, 28)),                     # tiny at the corner: grown inward
    ((388, 304, 392, 308), (372, 272, 400, 300)),       # tiny at the far corner
    ((98, 77, 196, 80), (100, 62, 200, 90)),            # thin (short side 3 px): only that side grows
])
def test_repairs(box, expected):
    result = _resolve(box)
    assert result == expected
    x1, y1, x2, y2 = result
    assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 300 and min(x2 - x1, y2 - y1) >= 28


@pytest.mark.parametrize("box, fragment", [
    ((200, 10, 100, 50), "inverted"),
    ((10, 50, 100, 20), "inverted"),
    ((10, 10, 10, 50), "zero area"),
    ((10, 10, 50, 10), "zero area"),
    ((500, 400, 600, 500), "outside the image"),
    ((-100, -100, -10, -10), "outside the image"),
    ((0, 100, 392, 101), "too thin"),                   # 400 x 1 original px: aspect 400
    ((1, 2, 3), "4 numbers"),
    ((float("nan"), 0, 1, 1), "non-finite"),
])
def test_rejections(box, fragment):
    result = _resolve(box)
    assert isinstance(result, ActionError)
    assert fragment in result.message


def test_inverted_message_names_frame():
    result = _resolve((200, 10, 100, 50))
    assert "392x308" in result.message and "top-left" in result.message


def test_image_smaller_than_min_side():
    x1, y1, x2, y2 = gaze.resolve_box((1, 1, 3, 3), (20, 30), gaze.GazeConfig(relative_coords=True))
    assert (x1, y1, x2, y2) == (0, 0, 28, 20)


def _smooth_image(h=168, w=200, seed=0):
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 1.2) % 256, (yy * 1.5) % 256, ((xx + yy) * 0.7) % 256], -1)
    noise = np.random.default_rng(seed).integers(0, 30, base.shape)
    return (base + noise).clip(0, 255).astype(np.uint8)


def test_crop_from_original_with_margin_and_upscale():
    image = _smooth_image()
    cfg = gaze.GazeConfig(min_crop_side=56)
    plain = gaze.crop(image, (10, 20, 90, 120), cfg)
    np.testing.assert_array_equal(plain, image[20:120, 10:90])  # big enough: untouched pixels
    small = gaze.crop(image, (10, 20, 30, 50), cfg)
    assert small.shape == (84, 56, 3)  # 30x20 upscaled so the short side is 56
    margined = gaze.crop(image, (50, 50, 110, 130), gaze.GazeConfig(margin=0.25))
    np.testing.assert_array_equal(margined, image[30:150, 35:125])
    edge = gaze.crop(image, (0, 0, 60, 60), gaze.GazeConfig(margin=0.5))
    np.testing.assert_array_equal(edge, image[0:90, 0:90])  # margin clamped at the border


def test_crop_snaps_to_buckets():
    image = _smooth_image()
    cfg = gaze.GazeConfig(buckets=((56, 56), (56, 112), (112, 56)))
    assert gaze.crop(image, (0, 0, 40, 38), cfg).shape == (56, 56, 3)
    assert gaze.crop(image, (0, 0, 150, 60), cfg).shape == (56, 112, 3)
    assert gaze.crop(image, (0, 0, 40, 110), cfg).shape == (112, 56, 3)


@pytest.mark.parametrize("box, size", [((10, 20, 38, 48), (56, 56)), ((0, 0, 200, 168), (56, 56)),
                                       ((50, 30, 150, 90), (56, 112)), ((5, 7, 25, 40), (84, 56)),
                                       ((100, 60, 156, 116), (56, 56))])
def test_jax_crop_matches_numpy(box, size):
    image = _smooth_image()
    expected = gaze.crop(image, box, gaze.GazeConfig(buckets=(size,))).astype(np.float32)
    got = np.asarray(gaze.crop_and_resize(jnp.asarray(image)[None], jnp.asarray([box], jnp.float32), size))[0]
    assert got.dtype == np.uint8 and got.shape == expected.shape
    diff = np.abs(got.astype(np.float32) - expected)
    assert diff.mean() < 0.5 and diff.max() <= 12  # filters differ only at the crop's border


def test_jax_crop_batched():
    images = np.stack([_smooth_image(seed=s) for s in range(3)])
    boxes = np.asarray([[0, 0, 56, 56], [10, 20, 66, 76], [100, 100, 156, 156]], np.float32)
    out = np.asarray(gaze.crop_and_resize(jnp.asarray(images), jnp.asarray(boxes), (56, 56)))
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        np.testing.assert_array_equal(out[i], images[i, y1:y2, x1:x2])  # same size: exact

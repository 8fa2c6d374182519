"""Gaze boxes: from the model's frame to the original image, validated, repaired and cropped.

Qwen2.5-VL grounds in absolute pixels of the image as it saw it (after smart resize), Qwen3-VL
in 0-1000 relative coordinates; either way the crop is cut from the original full-resolution
image, so a small region keeps its detail. The repair rules follow the best peers (DeepEyes,
Qwen-Agent's zoom tool): clamp to the image, grow a side under 28 px to 28 px around the
centre, reject empty, inverted or needle-thin (aspect > 100) boxes with a message the model can
learn from. Crops are resized to one of a few bucket sizes so that a new crop never triggers a
recompilation of the vision tower.

Boxes are (x1, y1, x2, y2) with continuous pixel-edge coordinates: the box [0, 0, W, H] is
the whole image, and pixel (r, c) is covered by [c, r, c + 1, r + 1].
"""

import dataclasses
import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from gog_jax.agent.protocol import ActionError
from gog_jax.agent.render import VisionSpec
from gog_jax.processing.image import smart_resize, snap_to_bucket

Box = tuple[float, float, float, float]
IntBox = tuple[int, int, int, int]

RELATIVE_SCALE = 1000


@dataclasses.dataclass(frozen=True)
class GazeConfig:
    """How boxes are read and crops are made.

    relative_coords: boxes in 0-1000 of the image (Qwen3-VL) instead of model-frame pixels.
    vision: the model's image geometry (its smart resize defines the model frame); use the
      same `VisionSpec` as for rendering.
    min_side: a box side under this many original pixels is grown to it.
    max_aspect: longer/shorter side above this is rejected.
    margin: context added around the box, as a fraction of its width/height on each side.
    min_crop_side: without buckets, crops whose short side is smaller are upscaled to it.
    buckets: (h, w) sizes crops are resized to (`processing.image.snap_to_bucket`).
    """

    relative_coords: bool = False
    vision: VisionSpec = VisionSpec()
    min_side: int = 28
    max_aspect: float = 100.0
    margin: float = 0.0
    min_crop_side: int = 56
    buckets: tuple[tuple[int, int], ...] | None = None


def model_frame(height: int, width: int, config: GazeConfig) -> tuple[int, int]:
    """(h, w) of the frame the model's boxes live in, for an original image of this size."""
    if config.relative_coords:
        return RELATIVE_SCALE, RELATIVE_SCALE
    v = config.vision
    return smart_resize(height, width, v.factor, v.min_pixels, v.max_pixels)


def to_original(box: Sequence[float], image_hw: tuple[int, int], config: GazeConfig) -> Box:
    """Model-frame box -> original-image pixels (floats, not clamped)."""
    fh, fw = model_frame(*image_hw, config)
    sy, sx = image_hw[0] / fh, image_hw[1] / fw
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1 * sx, y1 * sy, x2 * sx, y2 * sy


def to_model(box: Sequence[float], image_hw: tuple[int, int], config: GazeConfig,
             integer: bool = True) -> Box:
    """Original-image box -> the model's frame (SFT targets, drawings); rounded if `integer`."""
    fh, fw = model_frame(*image_hw, config)
    sy, sx = fh / image_hw[0], fw / image_hw[1]
    x1, y1, x2, y2 = (float(v) for v in box)
    out = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
    return tuple(float(round(v)) for v in out) if integer else out


def _fmt(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def resolve_box(box: Sequence[float], image_hw: tuple[int, int],
                config: GazeConfig) -> IntBox | ActionError:
    """Model-frame box -> a valid integer box in original pixels, repaired, or an ActionError."""
    fh, fw = model_frame(*image_hw, config)
    frame = ("0-1000 relative coordinates" if config.relative_coords
             else f"pixels of the {fw}x{fh} image")
    if len(box) != 4:
        return ActionError(f"A gaze box needs 4 numbers [x1, y1, x2, y2], got {len(box)}.")
    if not all(math.isfinite(float(v)) for v in box):
        return ActionError(f"Gaze box {list(box)} has a non-finite coordinate.")
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1 or y2 < y1:
        return ActionError(f"Gaze box {_fmt(box)} is inverted: write the top-left corner (x1, y1) first and the "
                           f"bottom-right corner (x2, y2) second, in {frame}.")
    if x2 == x1 or y2 == y1:
        return ActionError(f"Gaze box {_fmt(box)} has zero area; give a region with x2 > x1 and y2 > y1.")
    height, width = image_hw
    ox1, oy1, ox2, oy2 = to_original(box, image_hw, config)
    ox1, ox2 = min(max(ox1, 0.0), width), min(max(ox2, 0.0), width)
    oy1, oy2 = min(max(oy1, 0.0), height), min(max(oy2, 0.0), height)
    if ox2 <= ox1 or oy2 <= oy1:
        return ActionError(f"Gaze box {_fmt(box)} lies outside the image; coordinates are in {frame}.")
    ix1, iy1, ix2, iy2 = math.floor(ox1), math.floor(oy1), math.ceil(ox2), math.ceil(oy2)
    bw, bh = ix2 - ix1, iy2 - iy1
    if max(bw, bh) / min(bw, bh) > config.max_aspect:
        return ActionError(f"Gaze box {_fmt(box)} is too thin (aspect ratio {max(bw, bh) / min(bw, bh):.0f} > "
                           f"{config.max_aspect:g}); choose a region around the object.")
    ix1, ix2 = _grow(ix1, ix2, config.min_side, width)
    iy1, iy2 = _grow(iy1, iy2, config.min_side, height)
    return ix1, iy1, ix2, iy2


def _grow(lo: int, hi: int, min_side: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) to min_side around its centre, shifted to stay inside [0, limit)."""
    side = min(min_side, limit)
    if hi - lo >= side:
        return lo, hi
    lo = math.floor((lo + hi) / 2 - side / 2)
    lo = min(max(lo, 0), limit - side)
    return lo, lo + side


def with_margin(box: IntBox, image_hw: tuple[int, int], margin: float) -> IntBox:
    """The box grown by `margin` x its size on every side, clamped to the image."""
    x1, y1, x2, y2 = box
    dx, dy = round((x2 - x1) * margin), round((y2 - y1) * margin)
    return max(x1 - dx, 0), max(y1 - dy, 0), min(x2 + dx, image_hw[1]), min(y2 + dy, image_hw[0])


def crop_size(box_hw: tuple[int, int], config: GazeConfig) -> tuple[int, int]:
    """(h, w) a crop of this size is resized to: its bucket, or upscaled to min_crop_side."""
    h, w = box_hw
    if config.buckets:
        return tuple(snap_to_bucket(h, w, config.buckets))
    scale = max(1.0, config.min_crop_side / min(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def crop(image: np.ndarray, box: IntBox, config: GazeConfig) -> np.ndarray:
    """uint8 [H, W, C] original image, valid box (from `resolve_box`) -> resized crop [h, w, C].

    Bilinear (antialiased when shrinking), the same filter as `crop_and_resize`.
    """
    x1, y1, x2, y2 = with_margin(box, image.shape[:2], config.margin)
    patch = np.ascontiguousarray(image[y1:y2, x1:x2])
    h, w = crop_size((y2 - y1, x2 - x1), config)
    if (h, w) == patch.shape[:2]:
        return patch
    return np.asarray(Image.fromarray(patch).resize((w, h), resample=Image.Resampling.BILINEAR))


@partial(jax.jit, static_argnames=("size",))
def crop_and_resize(images: jax.Array, boxes: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Batched crop-and-resize: images [B, H, W, C], boxes [B, 4] (x1, y1, x2, y2) -> [B, h, w, C].

    Boxes are in original pixels (already resolved and margined); bilinear with antialiasing,
    so it agrees with `crop` up to resampling differences. Integer images come back rounded in
    their dtype. One compilation per (shape, size): sizes come from the buckets.
    """
    out_h, out_w = size

    def one(image, box):
        x1, y1, x2, y2 = box[0], box[1], box[2], box[3]
        scale = jnp.stack([out_h / (y2 - y1), out_w / (x2 - x1)])
        translation = -jnp.stack([y1, x1]) * scale
        return jax.image.scale_and_translate(image.astype(jnp.float32), (out_h, out_w, image.shape[-1]),
                                             (0, 1), scale, translation, method="linear", antialias=True)

    out = jax.vmap(one)(images, boxes.astype(jnp.float32))
    if jnp.issubdtype(images.dtype, jnp.integer):
        info = jnp.iinfo(images.dtype)
        out = jnp.clip(jnp.round(out), info.min, info.max).astype(images.dtype)
    return out

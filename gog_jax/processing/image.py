"""Qwen2-VL image processing in NumPy: smart resize, normalisation, patchify, size buckets.

Bit-for-bit the algorithm of transformers' `Qwen2VLImageProcessorPil` (PIL bicubic resize of
the uint8 image, rescale, normalisation, temporal duplication, merge-window patch order),
so pixel values fed to our vision tower equal what the PyTorch model sees, with no torch.
Qwen2.5-VL's settings are the defaults; Qwen3-VL uses the same processor with `QWEN3_VL`
(16-pixel patches, so a resize factor of 32, and mean = std = 0.5).
"""

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# `preprocess` keywords for Qwen3-VL (its preprocessor_config.json; its min/max pixels are the callers' choice)
QWEN3_VL = dict(patch_size=16, merge_size=2, temporal_patch_size=2, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Size divisible by `factor`, area within [min_pixels, max_pixels], aspect ratio kept."""
    if min(height, width) <= 0:
        raise ValueError(f"Image has an empty side: {height}x{width}.")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"Aspect ratio must be under 200, got {height}x{width}.")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def snap_to_bucket(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The bucket (h, w) closest in log-aspect and log-area: a few sizes, so few compilations."""
    if not buckets:
        raise ValueError("No image-size buckets given.")

    def distance(bucket: tuple[int, int]) -> tuple[float, int, int]:
        bh, bw = bucket
        aspect = abs(math.log((bh / bw) / (height / width)))
        area = abs(math.log((bh * bw) / (height * width)))
        return (aspect + area, bh, bw)

    return min(buckets, key=distance)


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an image [H, W, 3|4], got shape {image.shape}.")
    if image.dtype != np.uint8:
        raise ValueError(f"Expected uint8 pixels, got {image.dtype}.")
    return image[..., :3]


def patchify(image: np.ndarray, patch_size: int = 14, merge_size: int = 2,
             temporal_patch_size: int = 2) -> tuple[np.ndarray, tuple[int, int, int]]:
    """[C, H, W] float -> ([grid_h*grid_w, C*tp*p*p], (1, grid_h, grid_w)), merge windows contiguous."""
    channels, height, width = image.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = image.reshape(channels, grid_h // merge_size, merge_size, patch_size,
                            grid_w // merge_size, merge_size, patch_size)
    patches = patches.transpose(1, 4, 2, 5, 0, 3, 6)  # [gh/m, gw/m, m, m, C, p, p]
    patches = np.broadcast_to(patches[:, :, :, :, :, None],
                              (*patches.shape[:5], temporal_patch_size, *patches.shape[5:]))
    flat = patches.reshape(grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size)
    return flat, (1, grid_h, grid_w)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL bicubic resize of a uint8 [H, W, 3] image (the resampler transformers uses)."""
    pil = Image.fromarray(_to_rgb_uint8(image))
    return np.asarray(pil.resize((width, height), resample=Image.Resampling.BICUBIC))


def preprocess(image: np.ndarray, *, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280,
               patch_size: int = 14, merge_size: int = 2, temporal_patch_size: int = 2,
               size: tuple[int, int] | None = None, mean: Sequence[float] = CLIP_MEAN,
               std: Sequence[float] = CLIP_STD) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 image -> (pixel_values [P, C*tp*p*p] float32, image_grid_thw [3] int64).

    `size` overrides smart resize (e.g. a bucket from `snap_to_bucket`); it must be a multiple
    of patch_size * merge_size. `mean`, `std`: per-channel normalisation of the [0, 1] pixels.
    """
    image = _to_rgb_uint8(image)
    factor = patch_size * merge_size
    if size is None:
        size = smart_resize(image.shape[0], image.shape[1], factor, min_pixels, max_pixels)
    if size[0] % factor or size[1] % factor:
        raise ValueError(f"Resized size {size} is not a multiple of {factor}.")
    resized = resize(image, *size).astype(np.float32) * np.float32(1 / 255)
    normalised = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    patches, grid = patchify(normalised.transpose(2, 0, 1), patch_size, merge_size, temporal_patch_size)
    return patches.astype(np.float32), np.asarray(grid, np.int64)


def preprocess_batch(images: Sequence[np.ndarray], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Several images -> concatenated pixel_values and image_grid_thw [num_images, 3], as HF returns."""
    outputs = [preprocess(image, **kwargs) for image in images]
    return (np.concatenate([pv for pv, _ in outputs], axis=0),
            np.stack([grid for _, grid in outputs]))

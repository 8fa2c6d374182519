"""Host-side multimodal rotary (M-RoPE) position ids, full and incremental.

Text tokens advance one position on all three axes; the tokens of an image with merged grid
(t, h, w) take (start + t_i, start + h_i, start + w_i) and the next text position is
start + max(h, w). This is transformers' `get_rope_index` for images; the incremental form
(`chunk_positions` with a `RopeState`) lets the sampling engine append a chunk — text and
images — at a sequence's current end without recomputing the prefix. A chunk may end inside
an image's tokens: the state remembers how much of that image has been placed.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class RopeState:
    """Where a sequence stands: its next text position and any image cut by a chunk boundary."""
    next_pos: int = 0
    image_grid: tuple[int, int, int] | None = None  # merged (t, h, w) of the image in progress
    image_start: int = 0
    image_done: int = 0  # tokens of that image already placed


def merged_grid(grid_thw: Sequence[int], spatial_merge_size: int) -> tuple[int, int, int]:
    t, h, w = (int(x) for x in grid_thw)
    return t, h // spatial_merge_size, w // spatial_merge_size


def _image_positions(grid: tuple[int, int, int], start: int, first: int, count: int) -> np.ndarray:
    """Positions [3, count] of tokens first..first+count-1 of an image with merged grid `grid`."""
    _, h, w = grid
    k = np.arange(first, first + count)
    return np.stack([start + k // (h * w), start + (k // w) % h, start + k % w])


def chunk_positions(token_ids: np.ndarray, image_grids: Sequence[Sequence[int]], state: RopeState,
                    image_token_id: int, spatial_merge_size: int) -> tuple[np.ndarray, RopeState]:
    """Positions [3, T] for a chunk of one sequence appended after `state`; returns the new state.

    `image_grids` are the (t, h, w) patch grids of the images that *begin* in this chunk, in order.
    """
    token_ids = np.asarray(token_ids)
    is_image = token_ids == image_token_id
    positions = np.empty((3, len(token_ids)), np.int64)
    grids = iter(image_grids)
    pos, grid, start, done = state.next_pos, state.image_grid, state.image_start, state.image_done
    i, n = 0, len(token_ids)
    while i < n:
        if grid is None and not is_image[i]:
            j = i + int(np.argmax(is_image[i:])) if is_image[i:].any() else n
            positions[:, i:j] = np.arange(pos, pos + j - i)
            pos += j - i
            i = j
            continue
        if grid is None:  # an image starts here
            try:
                grid = merged_grid(next(grids), spatial_merge_size)
            except StopIteration:
                raise ValueError("More image-pad tokens than image_grid_thw describes.") from None
            start, done = pos, 0
        total = int(np.prod(grid))
        run = int(np.argmin(is_image[i:])) if not is_image[i:].all() else n - i
        count = min(run, total - done)
        if count == 0:
            raise ValueError(f"Image of merged grid {grid} has {done} image-pad tokens; expected {total}.")
        positions[:, i:i + count] = _image_positions(grid, start, done, count)
        done += count
        i += count
        if done == total:
            pos = start + max(grid[1], grid[2])
            grid, done = None, 0
    if next(grids, None) is not None:
        raise ValueError("image_grid_thw describes more images than the image-pad tokens hold.")
    return positions, RopeState(pos, grid, start, done)


def get_rope_index(input_ids: np.ndarray, image_grid_thw: np.ndarray | None, attention_mask: np.ndarray | None,
                   image_token_id: int, spatial_merge_size: int) -> tuple[np.ndarray, np.ndarray]:
    """transformers' `get_rope_index` for a batch [B, T]: positions [3, B, T] and deltas [B].

    Padding (attention_mask == 0) gets position 0; images are assigned to sequences in order.
    delta = max position + 1 - number of tokens, as transformers defines it for generation.
    """
    input_ids = np.asarray(input_ids)
    batch, length = input_ids.shape
    mask = np.ones_like(input_ids, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    grids = [] if image_grid_thw is None else [tuple(g) for g in np.asarray(image_grid_thw).reshape(-1, 3)]
    positions = np.zeros((3, batch, length), np.int64)
    deltas = np.zeros((batch,), np.int64)
    used = 0
    for b in range(batch):
        ids = input_ids[b][mask[b]]
        state = RopeState()
        num_images = count_images(ids, grids[used:], image_token_id, spatial_merge_size)
        pos, state = chunk_positions(ids, grids[used:used + num_images], state, image_token_id, spatial_merge_size)
        if state.image_grid is not None:
            raise ValueError(f"Sequence {b} ends inside an image: too few image-pad tokens for its grid.")
        used += num_images
        positions[:, b, mask[b]] = pos
        deltas[b] = (pos.max() + 1 - len(ids)) if len(ids) else 0
    if used != len(grids):
        raise ValueError(f"image_grid_thw has {len(grids)} images but the image-pad tokens hold {used}.")
    return positions, deltas


def count_images(token_ids: np.ndarray, grids: Sequence[Sequence[int]], image_token_id: int,
                 spatial_merge_size: int) -> int:
    """How many of `grids` (in order) the image-pad tokens of one complete sequence consume."""
    remaining = int(np.sum(np.asarray(token_ids) == image_token_id))
    count = 0
    while remaining > 0 and count < len(grids):
        remaining -= int(np.prod(merged_grid(grids[count], spatial_merge_size)))
        count += 1
    if remaining != 0:
        raise ValueError("The number of image-pad tokens does not match image_grid_thw.")
    return count

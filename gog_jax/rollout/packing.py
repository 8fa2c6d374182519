"""Packing variable-length multi-turn trajectories into fixed-shape training batches.

SFT and GRPO share this one path. An `Example` is one conversation as token ids with its loss
mask, its images and (RL) its per-token sampler log-probs and scalar advantage. `pack` places
examples (`Packed`) into `rows` rows of `seq_len` tokens (first fit, longest first, or in a seeded random
order where batches are optimizer steps: see `Packed`); each example is a
segment with its own M-RoPE positions starting at 0, so attention never crosses examples.
Targets are the next token: position t carries the loss of token t+1, and only where t+1 is an
assistant token of the same segment, so prompts, observations and image tokens never enter
the loss. Those positions are a fifth of a batch's tokens in the default's SFT and GRPO data, so
each row lists them in `loss_index` ([R, loss_len], row-local, padded with the row's last position,
whose mask is always 0) and the LM head runs on those rows only, not on every position.

Images are encoded in `image_slots` slots of `image_patches` patches a batch: the vision tower
runs as a vmap over slots, each image attending within itself, instead of a dense mask over every
patch of the batch. A slot holds as many images as fit (`place_images`): a gaze crop is a ninth
of a question image, and one image a slot left 43% of the default SFT batches' patches padding.
`feature_index` lists, in the order of the batch's image-pad tokens, where each merged feature
lives in the flattened [image_slots * image_patches / merge**2] output (for Qwen3-VL, in each
DeepStack row alike).
Either family works: its patch geometry and normalisation come in the `VisionSpec`, its vision
metadata from `models.families` by the model config.
"""

import collections
import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from typing import Any

import jax
import numpy as np

from gog_jax.agent.render import VisionSpec, image_grid
from gog_jax.models import families
from gog_jax.models.qwen2_5_vl import rope  # both families' M-RoPE (qwen3_vl/rope.py)
from gog_jax.models.qwen2_5_vl.config import VLConfig
from gog_jax.processing.image import preprocess


@dataclasses.dataclass
class Example:
    """One conversation ready to pack. Arrays are [T]; `sampler_logprobs` is RL only."""

    token_ids: np.ndarray
    loss_mask: np.ndarray
    images: list[np.ndarray]
    advantage: float = 0.0
    sampler_logprobs: np.ndarray | None = None
    id: str = ""

    def __len__(self) -> int:
        return len(self.token_ids)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """A fixed-shape training batch: R rows of T tokens, N image slots of P patches."""

    tokens: np.ndarray            # [R, T] int32
    positions: np.ndarray         # [3, R, T] int32, M-RoPE per segment
    segment_ids: np.ndarray       # [R, T] int32, 0 = padding
    targets: np.ndarray           # [R, T] int32, next token
    loss_mask: np.ndarray         # [R, T] float32, 1 where the target is a trained token
    advantages: np.ndarray        # [R, T] float32
    sampler_logprobs: np.ndarray  # [R, T] float32, the sampler's log-prob of the target
    loss_index: np.ndarray        # [R, loss_len] int32, the loss positions of each row, then padding
    pixel_values: np.ndarray      # [N, P, patch_dim] float32
    vision: Any                   # the family's VisionMetadata, fields with a leading [N]
    feature_index: np.ndarray     # [N * P / merge**2] int32


@dataclasses.dataclass(frozen=True)
class PackConfig:
    """Static batch geometry: every batch has these shapes, so the update compiles once."""

    rows: int
    seq_len: int
    image_slots: int     # vision slots a batch
    image_patches: int   # patches a slot (one image at most this large; smaller ones share)
    max_segments: int = 16
    loss_len: int = 0  # loss positions a row may hold (its LM head rows); 0: as many as it has tokens

    @property
    def loss_slots(self) -> int:
        return self.loss_len or self.seq_len


def loss_len_of(seq_len: int, share: float) -> int:
    """`PackConfig.loss_len` for rows of `seq_len` tokens of which `share` may carry a loss: a
    multiple of 8, or 0 (room for every position) for a share of 1."""
    if not 0 < share <= 1:
        raise ValueError(f"The loss share of a row must be in (0, 1], got {share}.")
    return 0 if share == 1 else min(seq_len, -(-math.ceil(share * seq_len) // 8) * 8)


def place_images(patches: Sequence[int], slots: int, capacity: int) -> list[int] | None:
    """The slot of each image (first fit, largest first) in `slots` slots of `capacity` patches,
    or None when they do not fit. Deterministic, so a batch's layout is checked while packing
    and rebuilt from its images alone."""
    free: list[int] = []
    where = [0] * len(patches)
    for i in sorted(range(len(patches)), key=lambda i: -patches[i]):
        slot = next((s for s, room in enumerate(free) if patches[i] <= room), None)
        if slot is None:
            if len(free) == slots or patches[i] > capacity:
                return None
            free.append(capacity)
            slot = len(free) - 1
        free[slot] -= patches[i]
        where[i] = slot
    return where


def fit_rows(pack: PackConfig, lengths: Sequence[int], multiple: int = 128) -> PackConfig:
    """`pack` with rows only as long as the longest of `lengths` needs (a multiple of `multiple`,
    at most `pack.seq_len`) and as many rows as the batch's tokens fill (never more tokens).

    Causal attention costs each token its row's length, so on a fixed dataset (SFT) shorter rows
    make the same step cheaper: the default demonstrations (<= 476 tokens) train in 6 x 512
    instead of 4 x 768, 13% less time a step on CPU. Not for GRPO, whose lengths change every step.
    `loss_len` keeps its share of the row (rounded up to a multiple of 8).
    """
    longest = max(lengths, default=1)
    seq_len = min(pack.seq_len, -(-longest // multiple) * multiple)
    loss_len = pack.loss_len and loss_len_of(seq_len, pack.loss_len / pack.seq_len)
    return dataclasses.replace(pack, seq_len=seq_len, rows=max(1, pack.rows * pack.seq_len // seq_len),
                               loss_len=loss_len)


def image_inputs(image: np.ndarray, vision: VisionSpec) -> tuple[np.ndarray, np.ndarray]:
    """One image -> (pixel_values [P, patch_dim], grid [3]) as the engine and the renderer see it."""
    return preprocess(image, min_pixels=vision.min_pixels, max_pixels=vision.max_pixels,
                      patch_size=vision.patch_size, merge_size=vision.merge_size,
                      temporal_patch_size=vision.temporal_patch_size, mean=vision.mean, std=vision.std)


_MIXED_WINDOW = 2  # batches open at once when packing in a random order


class Packed:
    """The layout of examples in batches; `batch(i)` builds batch i on demand (images are processed
    then, so a dataset's worth of patches never sits in host memory).

    `seed=None` places examples longest first (the tightest packing; right for GRPO, whose step
    sums all its batches). With a seed they are placed in that seeded random order, so every batch
    is a random sample of the data: longest-first packing puts examples of one length, and so
    mostly of one kind, in the same batch, and an SFT step that is one batch then trains on one kind
    at a time (measured: the tiny model never learned to copy a name or read a colour that way).
    """

    def __init__(self, examples: Sequence[Example], cfg: VLConfig, vision: VisionSpec, pack_config: PackConfig,
                 seed: int | None = None, cache_bytes: int = 0):
        self.cfg, self.vision, self.pack_config = cfg, vision, pack_config
        self.cache_bytes = cache_bytes  # host memory for built batches (see `batch`)
        self._cache: dict[int, Batch] = {}
        self._cached_bytes = 0
        self.examples: list[Example] = []
        self.dropped: list[str] = []  # ids of examples no batch can hold
        self.reasons: dict[str, int] = {}  # why, with counts
        for example in examples:
            problem = _problem(example, cfg, vision, pack_config)
            if problem is None:
                self.examples.append(example)
            else:
                self.dropped.append(example.id)
                self.reasons[problem] = self.reasons.get(problem, 0) + 1
        lengths = [len(e) for e in self.examples]
        if seed is None:
            order, window = sorted(range(len(lengths)), key=lambda i: -lengths[i]), None
        else:  # only the newest batches stay open, so short examples cannot drift to the front
            order, window = np.random.default_rng(seed).permutation(len(lengths)).tolist(), _MIXED_WINDOW
        patches = [_image_patches(e, vision) for e in self.examples]
        self.layout = _assign_rows(lengths, patches, [_loss_tokens(e) for e in self.examples], order, pack_config,
                                   window)
        self.tokens = sum(len(e) for e in self.examples)

    def __len__(self) -> int:
        return len(self.layout)

    def batch(self, index: int) -> Batch:
        """Batch `index`, built on demand and kept while `cache_bytes` allows: SFT revisits every
        batch each epoch, and a rebuild is ~40 ms of host work that, on a CPU host, takes cores
        from the step (the default's SFT step: 0.99 s with prebuilt batches against 1.09 s with
        prefetched ones, measured under load)."""
        if index in self._cache:
            return self._cache[index]
        batch = _build([[self.examples[i] for i in row] for row in self.layout[index]], self.cfg, self.vision,
                       self.pack_config)
        size = sum(x.nbytes for x in jax.tree.leaves(batch))
        if self._cached_bytes + size <= self.cache_bytes:
            self._cache[index] = batch
            self._cached_bytes += size
        return batch

    def prefetch(self, index_lists: Iterable[Sequence[int]], ahead: int = 2) -> Iterator[list[Batch]]:
        """The batches of each index list in turn, built `ahead` lists early in a background thread.

        Building a batch (image preprocessing, positions) is host work of ~20 ms; built in the
        loop, it runs while the device idles. Order and contents are those of the lists.
        """
        def build(indices: Sequence[int]) -> list[Batch]:
            return [self.batch(i) for i in indices]

        lists = iter(index_lists)
        with futures.ThreadPoolExecutor(max_workers=1) as pool:
            pending = collections.deque(pool.submit(build, indices) for _, indices in zip(range(ahead), lists))
            while pending:
                batches = pending.popleft().result()
                following = next(lists, None)  # keep `ahead` lists in flight
                if following is not None:
                    pending.append(pool.submit(build, following))
                yield batches

    def trained_tokens(self, index: int) -> int:
        """Loss tokens of batch `index`."""
        return sum(_loss_tokens(self.examples[i]) for row in self.layout[index] for i in row)

    def segments(self, index: int) -> int:
        return sum(len(row) for row in self.layout[index])


def _loss_tokens(example: Example) -> int:
    """Positions of `example` that carry a loss (a segment's first token is never a target)."""
    return int(np.sum(example.loss_mask[1:]))


def _image_patches(example: Example, vision: VisionSpec) -> list[int]:
    return [int(np.prod(image_grid(im.shape[0], im.shape[1], vision))) for im in example.images]


def _problem(example: Example, cfg: VLConfig, vision: VisionSpec, pack: PackConfig) -> str | None:
    """Why an example cannot be packed (None if it can): checked before any batch is built."""
    patches = _image_patches(example, vision)
    if len(example) > pack.seq_len:
        return "too_long"
    if _loss_tokens(example) > pack.loss_slots:
        return "too_many_loss_tokens"
    if place_images(patches, pack.image_slots, pack.image_patches) is None:
        return "too_many_image_patches"
    pads = int(np.sum(example.token_ids == cfg.image_token_id))
    if pads != sum(p // vision.merge_size ** 2 for p in patches):
        return "image_tokens_mismatch"  # e.g. a sampled <|image_pad|> with no image behind it
    return None


def _assign_rows(lengths: list[int], patches: list[list[int]], loss_counts: list[int], order: list[int],
                 pack: PackConfig, window: int | None) -> list[list[list[int]]]:
    """First fit, in `order`, into the newest `window` batches (None: all) of `rows` rows each
    whose images `place_images` can hold; returns batches -> rows -> example indices."""
    batches: list[dict] = []
    for i in order:
        placed = False
        for batch in batches[-window if window else 0:]:
            if place_images(batch["images"] + patches[i], pack.image_slots, pack.image_patches) is None:
                continue
            for row in batch["rows"]:
                if (row["used"] + lengths[i] <= pack.seq_len and row["loss"] + loss_counts[i] <= pack.loss_slots
                        and len(row["items"]) < pack.max_segments):
                    row["used"] += lengths[i]
                    row["loss"] += loss_counts[i]
                    row["items"].append(i)
                    batch["images"] += patches[i]
                    placed = True
                    break
            if placed:
                break
        if not placed:
            batches.append({"images": list(patches[i]),
                            "rows": [{"used": lengths[i], "loss": loss_counts[i], "items": [i]}]
                            + [{"used": 0, "loss": 0, "items": []} for _ in range(pack.rows - 1)]})
    return [[row["items"] for row in batch["rows"]] for batch in batches]


def _positions(example: Example, grids, cfg: VLConfig) -> np.ndarray:
    positions, state = rope.chunk_positions(example.token_ids, grids, rope.RopeState(), cfg.image_token_id,
                                            cfg.vision.spatial_merge_size)
    if state.image_grid is not None:
        raise ValueError(f"Example {example.id!r} ends inside an image.")
    return positions


def _build(rows: list[list[Example]], cfg: VLConfig, vision: VisionSpec, pack: PackConfig) -> Batch:
    r, t = pack.rows, pack.seq_len
    tokens = np.zeros((r, t), np.int32)
    positions = np.zeros((3, r, t), np.int32)
    segments = np.zeros((r, t), np.int32)
    trained = np.zeros((r, t), bool)
    advantages = np.zeros((r, t), np.float32)
    logprobs = np.zeros((r, t), np.float32)
    images = []
    for row, items in enumerate(rows):
        start = 0
        for seg, example in enumerate(items, start=1):
            processed = [image_inputs(image, vision) for image in example.images]
            pos = _positions(example, [tuple(int(v) for v in grid) for _, grid in processed], cfg)
            end = start + len(example)
            tokens[row, start:end] = example.token_ids
            positions[:, row, start:end] = pos
            segments[row, start:end] = seg
            trained[row, start:end] = example.loss_mask
            advantages[row, start:end] = example.advantage
            if example.sampler_logprobs is not None:
                logprobs[row, start:end] = example.sampler_logprobs
            images.extend(processed)
            start = end
    # position t predicts token t + 1: shift the per-token fields left by one
    targets = np.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]
    same_segment = np.zeros_like(trained)
    same_segment[:, :-1] = (segments[:, 1:] == segments[:, :-1]) & (segments[:, :-1] > 0)
    loss_mask = np.zeros((r, t), np.float32)
    loss_mask[:, :-1] = trained[:, 1:] & same_segment[:, :-1]
    shifted_adv = np.zeros_like(advantages)
    shifted_adv[:, :-1] = advantages[:, 1:]
    shifted_lp = np.zeros_like(logprobs)
    shifted_lp[:, :-1] = logprobs[:, 1:]
    loss_index = np.full((r, pack.loss_slots), t - 1, np.int32)  # the last position never carries a loss
    for row in range(r):
        where = np.flatnonzero(loss_mask[row])
        loss_index[row, :len(where)] = where
    pixel_values, vision, feature_index = _image_slots(images, cfg, pack)
    return Batch(tokens, positions, segments, targets, loss_mask, shifted_adv * loss_mask, shifted_lp * loss_mask,
                 loss_index, pixel_values, vision, feature_index)


def _image_slots(images, cfg: VLConfig, pack: PackConfig):
    """[N, P, dim] patches, stacked per-slot metadata, and the feature gather index."""
    v, vision_metadata = cfg.vision, families.of(cfg).io.model_cls.vision_metadata
    unit = v.spatial_merge_size ** 2
    units = pack.image_patches // unit
    where = place_images([len(pv) for pv, _ in images], pack.image_slots, pack.image_patches)
    if where is None:
        raise ValueError(f"{len(images)} images do not fit {pack.image_slots} slots of {pack.image_patches} patches.")
    pixel_values = np.zeros((pack.image_slots, pack.image_patches, v.patch_dim), np.float32)
    fill, grids = [0] * pack.image_slots, [[] for _ in range(pack.image_slots)]
    index = []
    for (pv, grid), slot in zip(images, where):  # in the order of the batch's image-pad tokens
        pixel_values[slot, fill[slot]:fill[slot] + len(pv)] = pv
        index.append(slot * units + fill[slot] // unit + np.arange(len(pv) // unit))
        fill[slot] += len(pv)
        grids[slot].append(grid)
    empty = vision_metadata(np.zeros((0, 3)), v, pack.image_patches)
    metas = [vision_metadata(np.stack(g), v, pack.image_patches) if g else empty for g in grids]
    feature_index = np.zeros(pack.image_slots * units, np.int32)
    index = np.concatenate(index) if index else np.zeros(0, np.int32)
    feature_index[:len(index)] = index
    vision = jax.tree.map(lambda *xs: np.stack(xs), *metas)
    return pixel_values, vision, feature_index

"""Qwen3-VL vision tower: biased patch embedding plus learned position embeddings resampled to
each image's grid, 2-D rotary, LayerNorm blocks with full attention per frame, the patch
merger, and the DeepStack mergers that read intermediate blocks.

As for Qwen2.5-VL, everything that depends on the image grids (attention segments, rotary
positions, the position-embedding interpolation taps) is computed on the host by
`vision_metadata`, so the jitted tower depends only on the (bucketed) number of patches.
Patches beyond the real ones are padding: their own attention segment, a zero position
embedding, and merged outputs the caller drops.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gog_jax.models.layers import LayerNorm, Linear
from gog_jax.models.qwen2_5_vl import vision as qwen25_vision
from gog_jax.models.qwen3_vl.config import ModelConfig, VisionConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisionMetadata:
    """Index arrays for one batch of images, in the processor's patch order.

    image_segments [P]: attention segment of each patch, one per frame (-1: padding);
    rotary_pos [P, 2]: (row, col) of each patch in its image;
    pos_index, pos_weight [P, 4]: the bilinear taps into the flattened position-embedding grid
    and their weights (all zero for padding).
    """
    image_segments: np.ndarray
    rotary_pos: np.ndarray
    pos_index: np.ndarray
    pos_weight: np.ndarray


def _axis_taps(index: np.ndarray, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps [n, 2] into a table of `side` entries for positions `index` on an axis of
    `size`, and their weights: F.interpolate(align_corners=True), in float32 as transformers does."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
    floor = np.floor(src)
    offsets = np.arange(2, dtype=np.float32)
    taps = np.clip(floor[:, None] + offsets, 0, side - 1).astype(np.int32)
    weights = np.maximum(1 - np.abs(src[:, None] - floor[:, None] - offsets), 0)
    return taps, weights


def position_taps(pos: np.ndarray, h: int, w: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights [n, 4] that resample the side x side learned grid at patches (row, col) [n, 2]."""
    h_taps, h_weights = _axis_taps(pos[:, 0], h, side)
    w_taps, w_weights = _axis_taps(pos[:, 1], w, side)
    index = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(-1, 4)
    return index, (h_weights[:, :, None] * w_weights[:, None, :]).reshape(-1, 4)


def vision_metadata(grid_thw: np.ndarray, cfg: VisionConfig, num_patches: int | None = None) -> VisionMetadata:
    """Host-side metadata for images with patch grids `grid_thw` [n, 3], padded to `num_patches`."""
    grid_thw, pad = qwen25_vision.padded_grids(grid_thw, cfg, num_patches)
    segments, rotary, index, weight = [], [], [], []
    frame = 0
    for t, h, w in grid_thw:
        pos = qwen25_vision.merge_order_positions(h, w, cfg.spatial_merge_size)
        taps, taps_weight = position_taps(pos, h, w, cfg.grid_side)
        segments.append(frame + np.repeat(np.arange(t), h * w))
        rotary.append(np.tile(pos, (t, 1)))
        index.append(np.tile(taps, (t, 1)))
        weight.append(np.tile(taps_weight, (t, 1)))
        frame += t
    segments.append(np.full(pad, -1))
    rotary.append(np.zeros((pad, 2)))
    index.append(np.zeros((pad, 4)))
    weight.append(np.zeros((pad, 4)))
    return VisionMetadata(
        image_segments=np.concatenate(segments).astype(np.int32),
        rotary_pos=np.concatenate(rotary).astype(np.int32),
        pos_index=np.concatenate(index).astype(np.int32),
        pos_weight=np.concatenate(weight).astype(np.float32),
    )


class VisionMLP(nnx.Module):
    """linear_fc2(gelu(linear_fc1(x)))."""

    def __init__(self, d_in: int, hidden: int, d_out: int, *, approximate: bool, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.linear_fc1 = Linear(d_in, hidden, use_bias=True, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.linear_fc2 = Linear(hidden, d_out, use_bias=True, axes=("mlp", "embed"), dtype=dtype, rngs=rngs)
        self.approximate = approximate

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_fc2(jax.nn.gelu(self.linear_fc1(x), approximate=self.approximate))


class PatchMerger(VisionMLP):
    """LayerNorm, each merge unit's patches concatenated, then an (exact) GELU MLP to the text
    width. The DeepStack mergers normalise after the concatenation (`postshuffle`), the final
    merger before it."""

    def __init__(self, cfg: VisionConfig, *, postshuffle: bool, dtype: jnp.dtype, rngs: nnx.Rngs):
        merged = cfg.hidden_size * cfg.spatial_merge_size ** 2
        super().__init__(merged, merged, cfg.out_hidden_size, approximate=False, dtype=dtype, rngs=rngs)
        self.norm = LayerNorm(merged if postshuffle else cfg.hidden_size, eps=1e-6, dtype=dtype)
        self.merged = merged

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.norm(x.reshape(-1, self.norm.scale.shape[0])).reshape(-1, self.merged)
        return super().__call__(x)


class VisionBlock(qwen25_vision.VisionBlock):
    """Qwen2.5-VL's block (and attention) with LayerNorms and a GELU MLP."""

    def __init__(self, cfg: VisionConfig, dtype: jnp.dtype, rngs: nnx.Rngs):  # pylint: disable=super-init-not-called
        self.norm1 = LayerNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
        self.norm2 = LayerNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
        self.attn = qwen25_vision.VisionAttention(cfg, dtype, rngs)
        self.mlp = VisionMLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_size,
                             approximate=cfg.gelu_approximate, dtype=dtype, rngs=rngs)


class VisionTower(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        v = cfg.vision
        self.cfg = v
        self.patch_embed = qwen25_vision.patch_embedding(v, use_bias=True, dtype=dtype, rngs=rngs)
        self.pos_embed = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (v.num_position_embeddings,
                                                                                 v.hidden_size), dtype),
                                   logical_axes=(None, "embed"))
        self.blocks = nnx.List([VisionBlock(v, dtype, rngs) for _ in range(v.depth)])
        self.merger = PatchMerger(v, postshuffle=False, dtype=dtype, rngs=rngs)
        self.deepstack_merger_list = nnx.List([PatchMerger(v, postshuffle=True, dtype=dtype, rngs=rngs)
                                               for _ in v.deepstack_visual_indexes])

    def __call__(self, pixel_values: jax.Array, meta: VisionMetadata) -> jax.Array:
        """pixel_values [P, patch_dim] -> features [1 + L, P / merge_size**2, out_hidden_size]: the
        merger's output, then the L DeepStack mergers' (blocks `deepstack_visual_indexes`, in block order)."""
        x = self.patch_embed(pixel_values.astype(self.patch_embed.kernel.dtype))
        taps = self.pos_embed[...][meta.pos_index].astype(jnp.float32)  # [P, 4, D]
        x = x + jnp.sum(taps * meta.pos_weight[..., None], axis=1).astype(x.dtype)
        cos, sin = qwen25_vision.vision_rotary(meta.rotary_pos, self.cfg)
        indexes = self.cfg.deepstack_visual_indexes
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, meta.image_segments)
            if i in indexes:
                features.append(self.deepstack_merger_list[indexes.index(i)](x))
        return jnp.stack([self.merger(x), *features])

"""Qwen2.5-VL vision tower: patch embedding, 2D rotary, windowed + full attention, patch merger.

Everything that depends on the image grids (window permutation, attention segments, rotary
positions) is computed on the host by `vision_metadata` as plain index arrays, so the jitted
tower depends only on the (bucketed) number of patches, never on the grids themselves.
Patches beyond the real ones are padding: they form their own attention segment and their
merged outputs are dropped by the caller.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gog_jax.models.layers import Linear, RMSNorm, SwiGLU, apply_rotary, attention
from gog_jax.models.qwen2_5_vl.config import ModelConfig, VisionConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VisionMetadata:
    """Index arrays for one batch of images, in the tower's window-permuted patch order.

    unit_perm [U]: merge-unit order used inside the tower (U = patches / merge_size**2);
    unit_unperm [U]: its inverse, applied to the merged output;
    window_segments / image_segments [P]: attention segment of each patch (-1: padding);
    rotary_pos [P, 2]: (row, col) of each patch in its image.
    """
    unit_perm: np.ndarray
    unit_unperm: np.ndarray
    window_segments: np.ndarray
    image_segments: np.ndarray
    rotary_pos: np.ndarray


def _window_units(grid_t: int, grid_h: int, grid_w: int, cfg: VisionConfig) -> list[np.ndarray]:
    """Merge-unit indices of one image grouped by attention window (transformers' window index)."""
    merged_h, merged_w = grid_h // cfg.spatial_merge_size, grid_w // cfg.spatial_merge_size
    win = cfg.window_size // cfg.spatial_merge_size // cfg.patch_size
    index = np.arange(grid_t * merged_h * merged_w).reshape(grid_t, merged_h, merged_w)
    windows = []
    for t in range(grid_t):
        for r in range(0, merged_h, win):
            for c in range(0, merged_w, win):
                windows.append(index[t, r:r + win, c:c + win].reshape(-1))
    return windows


def merge_order_positions(h: int, w: int, m: int) -> np.ndarray:
    """(row, col) [h * w, 2] of every patch of an h x w grid in the processor's patch order:
    m x m merge windows contiguous, windows in raster order."""
    rows = np.arange(h).reshape(h // m, m, 1, 1).repeat(w // m, 2).repeat(m, 3).transpose(0, 2, 1, 3)
    cols = np.arange(w).reshape(1, 1, w // m, m).repeat(h // m, 0).repeat(m, 1).transpose(0, 2, 1, 3)
    return np.stack([rows.reshape(-1), cols.reshape(-1)], -1)


def padded_grids(grid_thw: np.ndarray, cfg: VisionConfig, num_patches: int | None) -> tuple[np.ndarray, int]:
    """grid_thw as int64 [n, 3], and how many padding patches bring its patches to `num_patches`
    (None: none); raises unless that is whole merge units."""
    grid_thw = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    unit = cfg.spatial_merge_size ** 2
    real = int(np.sum(np.prod(grid_thw, axis=-1)))
    num_patches = real if num_patches is None else num_patches
    if num_patches < real or num_patches % unit:
        raise ValueError(f"Cannot pad {real} patches to {num_patches} (a multiple of {unit} is needed).")
    return grid_thw, num_patches - real


def vision_metadata(grid_thw: np.ndarray, cfg: VisionConfig, num_patches: int | None = None) -> VisionMetadata:
    """Host-side metadata for images with patch grids `grid_thw` [n, 3], padded to `num_patches`."""
    grid_thw, pad = padded_grids(grid_thw, cfg, num_patches)
    unit = cfg.spatial_merge_size ** 2
    perm, window_seg, image_seg, rot = [], [], [], []
    unit_offset = window_id = segment_id = 0
    m = cfg.spatial_merge_size
    for t, h, w in grid_thw:
        pos = merge_order_positions(h, w, m).reshape(-1, unit, 2)
        units_per_frame = (h // m) * (w // m)
        for window in _window_units(t, h, w, cfg):
            perm.append(window + unit_offset)
            window_seg.append(np.full(len(window) * unit, window_id))
            image_seg.append(segment_id + window // units_per_frame)  # one segment per frame
            rot.append(pos[window % units_per_frame].reshape(-1, 2))
            window_id += 1
        unit_offset += t * units_per_frame
        segment_id += t
    pad_units = pad // unit
    perm = np.concatenate(perm + [np.arange(unit_offset, unit_offset + pad_units)]).astype(np.int32)
    image_seg = np.repeat(np.concatenate(image_seg), unit) if image_seg else np.zeros((0,), np.int64)
    return VisionMetadata(
        unit_perm=perm,
        unit_unperm=np.argsort(perm).astype(np.int32),
        window_segments=np.concatenate(window_seg + [np.full(pad_units * unit, -1)]).astype(np.int32),
        image_segments=np.concatenate([image_seg, np.full(pad_units * unit, -1)]).astype(np.int32),
        rotary_pos=np.concatenate(rot + [np.zeros((pad_units * unit, 2), np.int64)]).astype(np.int32),
    )


def vision_rotary(rotary_pos: jax.Array, cfg: VisionConfig) -> tuple[jax.Array, jax.Array]:
    """2-D rotary: (row, col) [P, 2] -> cos, sin [P, head_dim]; half the frequencies turn with
    the row, half with the column (Qwen2.5-VL and Qwen3-VL alike)."""
    quarter = cfg.head_dim // 4
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, 2 * quarter, 2, dtype=jnp.float32) / (2 * quarter)))
    freqs = rotary_pos[..., None].astype(jnp.float32) * inv_freq  # [P, 2, quarter]
    freqs = freqs.reshape(freqs.shape[0], -1)  # (h freqs, w freqs)
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def window_patches(cfg: VisionConfig) -> int:
    """Patches in one full attention window (the most any window holds)."""
    return (cfg.window_size // cfg.patch_size) ** 2


def banded_attention(q: jax.Array, k: jax.Array, v: jax.Array, segments: jax.Array, block: int) -> jax.Array:
    """`attention` among patches of the same segment, for segments that are contiguous runs of at
    most `block` patches (the windows, in the tower's window-permuted order): q, k, v [P, N, H].

    A run of at most `block` patches meets at most two aligned blocks of `block` patches, so the
    queries of block i find every key they may attend to in blocks i - 1 .. i + 1: scores
    [P, 3 * block] instead of [P, P], the same result (masked keys weigh exactly 0 either way).
    """
    patches, pad = q.shape[0], -q.shape[0] % block
    segments = jnp.pad(segments, (0, pad), constant_values=-2)  # padding rows: their own segment
    q, k, v = (jnp.pad(x, ((0, pad), (0, 0), (0, 0))) for x in (q, k, v))
    blocks = q.shape[0] // block

    def bands(x, fill):  # [P, ...] -> [blocks, 3 * block, ...]: blocks i - 1, i, i + 1 of each block i
        x = jnp.pad(x, ((block, block),) + ((0, 0),) * (x.ndim - 1), constant_values=fill)
        x = x.reshape(blocks + 2, block, *x.shape[1:])
        return jnp.concatenate([x[:-2], x[1:-1], x[2:]], axis=1)

    query_segments = segments.reshape(blocks, block)
    mask = query_segments[:, :, None] == bands(segments, -3)[:, None, :]  # -3: beyond the patches
    out = attention(q.reshape(blocks, block, *q.shape[1:]), bands(k, 0), bands(v, 0), mask)
    return out.reshape(-1, *out.shape[2:])[:patches]


class VisionAttention(nnx.Module):
    def __init__(self, cfg: VisionConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.qkv = Linear(d, 3 * d, use_bias=True, axes=("embed", "qkv"), dtype=dtype, rngs=rngs)
        self.proj = Linear(d, d, use_bias=True, axes=("qkv", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, segments: jax.Array,
                 window: int = 0) -> jax.Array:
        """segments [P]: patches attend within their segment. window > 0: the segments are
        windows of at most that many contiguous patches, attended in bands (`banded_attention`)."""
        patches = x.shape[0]
        q, k, v = jnp.moveaxis(self.qkv(x).reshape(patches, 3, self.num_heads, -1), 1, 0)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if window:
            out = banded_attention(q, k, v, segments, window)
        else:
            mask = segments[:, None] == segments[None, :]
            out = attention(q[None], k[None], v[None], mask[None])[0]
        return self.proj(out.reshape(patches, -1))


class VisionBlock(nnx.Module):
    def __init__(self, cfg: VisionConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
        self.norm2 = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
        self.attn = VisionAttention(cfg, dtype, rngs)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, segments, window: int = 0):
        x = x + self.attn(self.norm1(x), cos, sin, segments, window)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """RMSNorm, then each 2x2 merge unit concatenated and projected by a GELU MLP to the text width."""

    def __init__(self, cfg: VisionConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        merged = cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.ln_q = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
        self.fc1 = Linear(merged, merged, use_bias=True, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.fc2 = Linear(merged, cfg.out_hidden_size, use_bias=True, axes=("mlp", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.ln_q(x).reshape(-1, self.fc1.kernel.shape[0])
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


def patch_embedding(cfg: VisionConfig, *, use_bias: bool, dtype: jnp.dtype, rngs: nnx.Rngs) -> Linear:
    """The Conv3d patch embedding: with stride == kernel it is exactly a matmul on flat patches."""
    return Linear(cfg.patch_dim, cfg.hidden_size, use_bias=use_bias, axes=("patch", "embed"), dtype=dtype, rngs=rngs)


class VisionTower(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        v = cfg.vision
        self.cfg = v
        self.patch_embed = patch_embedding(v, use_bias=False, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([VisionBlock(v, dtype, rngs) for _ in range(v.depth)])
        self.merger = PatchMerger(v, dtype, rngs)

    def __call__(self, pixel_values: jax.Array, meta: VisionMetadata) -> jax.Array:
        """pixel_values [P, patch_dim] -> merged features [P / merge_size**2, out_hidden_size]."""
        unit = self.cfg.spatial_merge_size ** 2
        x = self.patch_embed(pixel_values.astype(self.patch_embed.kernel.dtype))
        x = x.reshape(-1, unit, x.shape[-1])[meta.unit_perm].reshape(x.shape)
        cos, sin = vision_rotary(meta.rotary_pos, self.cfg)
        # bands [P, 3 x window] beat dense [P, P] scores only past three windows' patches
        window = window_patches(self.cfg) if x.shape[0] > 3 * window_patches(self.cfg) else 0
        for i, block in enumerate(self.blocks):
            if i in self.cfg.fullatt_block_indexes:
                x = block(x, cos, sin, meta.image_segments)
            else:
                x = block(x, cos, sin, meta.window_segments, window)
        return self.merger(x)[meta.unit_unperm]

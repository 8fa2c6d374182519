"""Qwen2.5-VL (vision tower + decoder + LM head) and its transformers-style call.

`Qwen25VL.__call__` takes exactly what transformers' `Qwen2_5_VLForConditionalGeneration`
takes (input_ids, attention_mask, pixel_values, image_grid_thw), checks it on the host, computes
M-RoPE positions and vision metadata there, and runs one jitted program. The engine and the
trainers call the pieces directly: `encode_images`, `decoder.forward` and `logits`.
`VisionLanguageModel` holds all of that; Qwen3-VL builds on it with its own vision tower.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gog_jax.models.layers import Linear
from gog_jax.models.qwen2_5_vl import decoder as decoder_lib
from gog_jax.models.qwen2_5_vl import rope
from gog_jax.models.qwen2_5_vl.config import ModelConfig
from gog_jax.models.qwen2_5_vl.vision import VisionTower, vision_metadata


class VisionLanguageModel(nnx.Module):
    """A vision tower, the shared decoder and an LM head. A subclass passes its tower and sets
    `vision_metadata(grid_thw, vision_config, num_patches=None)`, the host-side index arrays
    its tower takes with the patches."""

    vision_metadata: Callable

    def __init__(self, config: ModelConfig, visual: nnx.Module, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.config = config
        self.visual = visual
        self.model = decoder_lib.Decoder(config, dtype, rngs)
        self.lm_head = (None if config.tie_word_embeddings else
                        Linear(config.text.hidden_size, config.text.vocab_size, use_bias=False,
                               axes=("embed", "vocab"), dtype=dtype, rngs=rngs))

    @property
    def dtype(self) -> jnp.dtype:
        return self.model.embed_tokens.dtype

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> logits [..., vocab] in float32 (tied: the embedding matrix)."""
        if self.lm_head is None:
            out = hidden @ self.model.embed_tokens[...].T
        else:
            out = self.lm_head(hidden)
        return out.astype(jnp.float32)

    def encode_images(self, pixel_values: jax.Array, meta) -> jax.Array:
        """Patches [P, patch_dim] -> features [..., P / merge**2, D] in image order (padding last);
        the leading axis, if any, holds DeepStack rows (see `decoder.forward`)."""
        return self.visual(pixel_values, meta)

    def forward(self, tokens, positions, **kwargs):
        """`decoder.forward` bound to this model (see there for the arguments)."""
        return decoder_lib.forward(self.model, tokens, positions, image_token_id=self.config.image_token_id, **kwargs)

    def __call__(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None) -> jax.Array:
        """transformers-style forward: input_ids [B, T] -> logits [B, T, vocab] (float32)."""
        inputs = prepare_inputs(self.config, input_ids, attention_mask, pixel_values, image_grid_thw,
                                self.vision_metadata)
        return _logits_program(self, *inputs)


class Qwen25VL(VisionLanguageModel):
    vision_metadata = staticmethod(vision_metadata)

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        super().__init__(config, VisionTower(config, dtype, rngs), dtype=dtype, rngs=rngs)


def prepare_inputs(cfg: ModelConfig, input_ids, attention_mask, pixel_values, image_grid_thw, metadata: Callable):
    """Host-side checks and `metadata` for the tower; every error is raised here, before anything compiles."""
    input_ids = np.asarray(input_ids)
    if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
        raise ValueError(f"input_ids must be an integer array [batch, seq]; got {input_ids.dtype} {input_ids.shape}.")
    if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= cfg.text.vocab_size):
        raise ValueError(f"input_ids must lie in [0, {cfg.text.vocab_size}).")
    mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} differs from input_ids shape {input_ids.shape}.")
    image_tokens = int(np.sum((input_ids == cfg.image_token_id) & (mask != 0)))
    pixels, meta = None, None
    if pixel_values is None:
        if image_tokens or image_grid_thw is not None:
            raise ValueError(f"input_ids hold {image_tokens} image-pad tokens and image_grid_thw is "
                             f"{'set' if image_grid_thw is not None else 'unset'}, but pixel_values is None.")
    else:
        pixels, grid = np.asarray(pixel_values), check_images(cfg, pixel_values, image_grid_thw)
        expected = int(np.sum(np.prod(grid, -1))) // cfg.vision.spatial_merge_size ** 2
        if expected != image_tokens:
            raise ValueError(f"image_grid_thw describes {expected} image tokens (after the "
                             f"{cfg.vision.spatial_merge_size}x{cfg.vision.spatial_merge_size} merge) but input_ids "
                             f"hold {image_tokens} image-pad tokens (id {cfg.image_token_id}).")
        meta = metadata(grid, cfg.vision)
    positions, _ = rope.get_rope_index(input_ids, None if pixels is None else image_grid_thw, mask,
                                       cfg.image_token_id, cfg.vision.spatial_merge_size)
    return (jnp.asarray(input_ids, jnp.int32), jnp.asarray(positions, jnp.int32),
            jnp.asarray(mask != 0, jnp.int32), None if pixels is None else jnp.asarray(pixels), meta)


def check_images(cfg: ModelConfig, pixel_values, image_grid_thw) -> np.ndarray:
    """Validates pixel_values [P, patch_dim] against image_grid_thw [n, 3]; returns the grid."""
    v = cfg.vision
    pixel_values = np.asarray(pixel_values)
    if image_grid_thw is None:
        raise ValueError("pixel_values given without image_grid_thw.")
    grid = np.asarray(image_grid_thw).reshape(-1, 3) if np.size(image_grid_thw) else np.zeros((0, 3), np.int64)
    if np.ndim(image_grid_thw) != 2 or np.shape(image_grid_thw)[-1] != 3:
        raise ValueError(f"image_grid_thw must be [num_images, 3]; got shape {np.shape(image_grid_thw)}.")
    if pixel_values.ndim != 2 or pixel_values.shape[1] != v.patch_dim:
        raise ValueError(f"pixel_values must be [num_patches, {v.patch_dim}] "
                         f"(channels*temporal_patch*patch*patch); got {pixel_values.shape}.")
    if (grid <= 0).any() or (grid[:, 1:] % v.spatial_merge_size).any():
        raise ValueError(f"image_grid_thw {grid.tolist()}: sizes must be positive and h, w multiples of "
                         f"spatial_merge_size={v.spatial_merge_size}.")
    if int(np.sum(np.prod(grid, -1))) != pixel_values.shape[0]:
        raise ValueError(f"image_grid_thw {grid.tolist()} describes {int(np.sum(np.prod(grid, -1)))} patches "
                         f"but pixel_values has {pixel_values.shape[0]}.")
    return grid


@jax.jit
def _logits_program(model: VisionLanguageModel, tokens, positions, segment_ids, pixel_values, meta):
    features = None if pixel_values is None else model.encode_images(pixel_values, meta)
    hidden, _ = model.forward(tokens, positions, segment_ids=segment_ids, image_features=features)
    return model.logits(hidden)

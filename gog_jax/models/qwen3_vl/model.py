"""Qwen3-VL (dense): its vision tower, the shared decoder and an LM head.

The surface is Qwen2.5-VL's (`VisionLanguageModel`): `config`, `dtype`, `logits`,
`encode_images`, `forward` (`decoder.forward`, same arguments) and a transformers-style
`__call__`. The decoder is Qwen2.5-VL's, switched by the config to q/k norms, explicit
head_dim and interleaved M-RoPE. DeepStack travels with the image features: `encode_images`
returns [1 + L, N, D] (the merger's output, then one row per DeepStack merger), and `forward`
adds row 1 + i to the image-pad positions after decoder layer i.
"""

import jax.numpy as jnp
from flax import nnx

from gog_jax.models.qwen2_5_vl.model import VisionLanguageModel
from gog_jax.models.qwen3_vl.config import ModelConfig
from gog_jax.models.qwen3_vl.vision import VisionTower, vision_metadata


class Qwen3VL(VisionLanguageModel):
    vision_metadata = staticmethod(vision_metadata)

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        super().__init__(config, VisionTower(config, dtype, rngs), dtype=dtype, rngs=rngs)

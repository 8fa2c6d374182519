"""Qwen3-VL (dense) in Flax NNX: `from_pretrained`, `save_pretrained`, the model and its presets.

The decoder, KV cache and checkpoint machinery are Qwen2.5-VL's (`gog_jax.models.qwen2_5_vl`,
`gog_jax.models.checkpoint`); this package adds the vision tower, the config and the key map.
"""

from gog_jax.models.qwen2_5_vl.decoder import KVCache
from gog_jax.models.qwen3_vl.config import ModelConfig, TextConfig, VisionConfig
from gog_jax.models.qwen3_vl.model import Qwen3VL
from gog_jax.models.qwen3_vl.presets import PRESETS, get as get_preset, model_config
from gog_jax.models.qwen3_vl.vision import VisionMetadata, vision_metadata
from gog_jax.models.qwen3_vl.weights import from_pretrained, load_tensors, read_config, save_pretrained

__all__ = [
    "KVCache", "ModelConfig", "PRESETS", "Qwen3VL", "TextConfig", "VisionConfig", "VisionMetadata",
    "from_pretrained", "get_preset", "load_tensors", "model_config", "read_config", "save_pretrained",
    "vision_metadata",
]

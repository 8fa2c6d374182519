"""Qwen2.5-VL in Flax NNX: `from_pretrained`, `save_pretrained`, the model and its presets."""

from gog_jax.models.qwen2_5_vl.config import ModelConfig, TextConfig, VisionConfig
from gog_jax.models.qwen2_5_vl.decoder import KVCache
from gog_jax.models.qwen2_5_vl.model import Qwen25VL
from gog_jax.models.qwen2_5_vl.presets import PRESETS, get as get_preset, model_config
from gog_jax.models.qwen2_5_vl.vision import VisionMetadata, vision_metadata
from gog_jax.models.qwen2_5_vl.weights import from_pretrained, load_tensors, read_config, save_pretrained

__all__ = [
    "KVCache", "ModelConfig", "PRESETS", "Qwen25VL", "TextConfig", "VisionConfig", "VisionMetadata",
    "from_pretrained", "get_preset", "load_tensors", "model_config", "read_config", "save_pretrained",
    "vision_metadata",
]

"""Qwen3-VL model presets as ml-collections configs: qwen3_vl_tiny (tests and the embedded
default's Qwen3-VL variant) and the released dense shapes (2B, 4B, 8B). Names carry the family,
so they stand beside Qwen2.5-VL's in one namespace (`gog_jax.models.families.PRESETS`).
`model_config(preset)` turns one into a `ModelConfig`.

The released shapes were written from memory (no network where this was written), except the 8B
vision tower, which is transformers' `Qwen3VLVisionConfig` default; public copies of the 4B's
`config.json` (every size above) and of the 2B's text sizes agree with them. The language models
are the Qwen3 dense ones of the same size (1.7B, 4B, 8B); the 2B and 4B share a smaller vision tower.
"""

import ml_collections

from gog_jax.models.qwen2_5_vl import presets as qwen25_presets
from gog_jax.models.qwen3_vl.config import ModelConfig

_TEXT = dict(vocab_size=151936, head_dim=128, rope_theta=5000000.0, mrope_section=(24, 20, 20),
             max_position_embeddings=262144)
_VISION_2B_4B = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                     num_position_embeddings=2304, deepstack_visual_indexes=(5, 11, 17))
_VISION_8B = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                  num_position_embeddings=2304, deepstack_visual_indexes=(8, 16, 24))
# name -> (hidden, intermediate, layers, heads, kv heads, tied embeddings, vision tower)
_RELEASED = {
    "qwen3_vl_2b": (2048, 6144, 28, 16, 8, True, _VISION_2B_4B),
    "qwen3_vl_4b": (2560, 9728, 36, 32, 8, True, _VISION_2B_4B),
    "qwen3_vl_8b": (4096, 12288, 36, 32, 8, False, _VISION_8B),
}


def _preset(name: str) -> dict:
    if name == "qwen3_vl_tiny":  # Qwen2.5-VL tiny's sizes, two DeepStack rows, the embedded tokenizer's ids
        return dict(
            text=dict(vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=1000000.0,
                      mrope_section=(6, 5, 5), max_position_embeddings=4096),
            vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, num_position_embeddings=256,
                        deepstack_visual_indexes=(0, 1), out_hidden_size=128),
            tie_word_embeddings=True, **qwen25_presets.tiny_tokens())
    if name not in _RELEASED:
        raise ValueError(f"Unknown Qwen3-VL model preset {name!r}; known: {PRESETS}.")
    hidden, intermediate, layers, heads, kv_heads, tied, vision = _RELEASED[name]
    return dict(
        text=dict(_TEXT, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads),
        vision=dict(vision, out_hidden_size=hidden),
        tie_word_embeddings=tied, **qwen25_presets.QWEN_TOKENS)


PRESETS = ("qwen3_vl_tiny", *_RELEASED)


def get(name: str) -> ml_collections.ConfigDict:
    """The named preset as a ConfigDict (overridable from the command line like any config)."""
    return ml_collections.ConfigDict(_preset(name))


def model_config(preset: ml_collections.ConfigDict | dict) -> ModelConfig:
    """ConfigDict (or dict) of a preset -> the frozen ModelConfig the model is built from."""
    return qwen25_presets.model_config(preset, ModelConfig)

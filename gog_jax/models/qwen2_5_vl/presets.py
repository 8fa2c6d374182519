"""Model presets as ml-collections configs: tiny (tests, embedded default), small (benchmarks),
and the released 3B / 7B / 32B shapes. `model_config(preset)` turns one into a `ModelConfig`."""

import dataclasses

import ml_collections

from gog_jax.models.qwen2_5_vl.config import ModelConfig

# The released checkpoints' vision tower (3B and 7B; 32B differs only in intermediate_size).
_RELEASED_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                        window_size=112, fullatt_block_indexes=(7, 15, 23, 31), tokens_per_second=2)
QWEN_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                   vision_end_token_id=151653, eos_token_ids=(151645, 151643), pad_token_id=151643)


def tiny_tokens() -> dict:
    """Special ids of the embedded default tokenizer, read from the one module that fixes them."""
    from gog_jax.agent.tokenizer import SPECIAL_TOKENS  # pylint: disable=import-outside-toplevel
    return dict(image_token_id=SPECIAL_TOKENS["<|image_pad|>"],
                video_token_id=SPECIAL_TOKENS["<|video_pad|>"],
                vision_start_token_id=SPECIAL_TOKENS["<|vision_start|>"],
                vision_end_token_id=SPECIAL_TOKENS["<|vision_end|>"],
                eos_token_ids=(SPECIAL_TOKENS["<|im_end|>"], SPECIAL_TOKENS["<|endoftext|>"]),
                pad_token_id=SPECIAL_TOKENS["<|endoftext|>"])


def _preset(name: str) -> dict:
    if name == "tiny":  # ~1.5M params: learns in minutes on 2 CPU cores (DESIGN §6).
        return dict(
            text=dict(vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, mrope_section=(4, 6, 6),
                      max_position_embeddings=4096),
            vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, window_size=56,
                        fullatt_block_indexes=(1,), out_hidden_size=128),
            tie_word_embeddings=True, **tiny_tokens())
    if name == "small":  # ~50M params: CPU benchmarks (special ids laid out as the embedded tokenizer's).
        return dict(
            text=dict(vocab_size=16384, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=4, mrope_section=(8, 12, 12),
                      max_position_embeddings=8192),
            vision=dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, window_size=112,
                        fullatt_block_indexes=(1, 3), out_hidden_size=512),
            tie_word_embeddings=False, **tiny_tokens())
    if name == "3b":
        return dict(
            text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                      num_attention_heads=16, num_key_value_heads=2),
            vision=dict(_RELEASED_VISION, out_hidden_size=2048),
            tie_word_embeddings=True, **QWEN_TOKENS)
    if name == "7b":
        return dict(
            text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4),
            vision=dict(_RELEASED_VISION, out_hidden_size=3584),
            tie_word_embeddings=False, **QWEN_TOKENS)
    if name == "32b":
        return dict(
            text=dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                      num_attention_heads=40, num_key_value_heads=8),
            vision=dict(_RELEASED_VISION, intermediate_size=3456, out_hidden_size=5120),
            tie_word_embeddings=False, **QWEN_TOKENS)
    raise ValueError(f"Unknown model preset {name!r}; known: {PRESETS}.")


PRESETS = ("tiny", "small", "3b", "7b", "32b")


def get(name: str) -> ml_collections.ConfigDict:
    """The named preset as a ConfigDict (overridable from the command line like any config)."""
    return ml_collections.ConfigDict(_preset(name))


def model_config(preset: ml_collections.ConfigDict | dict, config_cls: type = ModelConfig) -> ModelConfig:
    """ConfigDict (or dict) of a preset -> the frozen ModelConfig the model is built from.

    config_cls: another family's ModelConfig (Qwen3-VL's), whose `text` and `vision` fields are
    typed with that family's config classes."""
    d = preset.to_dict() if isinstance(preset, ml_collections.ConfigDict) else dict(preset)
    tuples = lambda m: {k: tuple(v) if isinstance(v, list) else v for k, v in m.items()}  # noqa: E731
    types = {f.name: f.type for f in dataclasses.fields(config_cls)}
    return config_cls(text=types["text"](**tuples(d.pop("text"))), vision=types["vision"](**tuples(d.pop("vision"))),
                      **tuples(d))

"""Forward pass of a model preset: `--config=configs/forward.py[:preset=small]`."""

import ml_collections

from gog_jax.models.qwen2_5_vl import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = dict(kv.split("=", 1) for kv in arg.split(",")) if arg else {}
    config = ml_collections.ConfigDict()
    config.mode = "forward"
    config.seed = 0
    config.dtype = args.get("dtype", "float32")
    config.model = presets.get(args.get("preset", "tiny"))
    config.image_size = 168
    config.text_tokens = 64
    config.batch_size = 4
    return config

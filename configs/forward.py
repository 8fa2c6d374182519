"""Forward pass of a model preset: `--config=configs/forward.py[:model=small,dtype=bfloat16]`.

`model=` names any preset of configs/common.py (Qwen2.5-VL `tiny` by default, or e.g. `qwen3_vl_tiny`).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, {"model", "dtype"})
    config = ml_collections.ConfigDict()
    config.mode = "forward"
    config.seed = 0
    config.model = common.model(args.get("model", "tiny"))
    config.model.dtype = args.get("dtype", "float32")
    config.image_size = 168
    config.text_tokens = 64
    config.batch_size = 4
    return config

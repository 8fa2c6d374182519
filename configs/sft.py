"""SFT (stage 1): `--config=configs/sft.py[:smoke]`; `--config.sft.data=conv.jsonl` for your own data.

Args: smoke (a seconds-long run on the small world), world=default|small, model=NAME (a preset of
configs/common.py, e.g. qwen3_vl_tiny or qwen3_vl_8b).
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, {"smoke", "world", "model"})
    c = common.base("sft", args.get("model", "tiny"))
    c.sft = common.sft(c)
    if "smoke" in args:
        common.smoke(c)
    if args.get("world") == "small":
        common.small_world(c)
    return c

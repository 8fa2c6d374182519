"""SFT (stage 1): `--config=configs/sft.py[:smoke]`; `--config.sft.data=conv.jsonl` for your own data.

Args: smoke (a seconds-long run on the small world), world=default|small.
"""

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, {"smoke", "world"})
    c = common.base("sft")
    c.sft = common.sft(c)
    if "smoke" in args:
        common.smoke(c)
    if args.get("world") == "small":
        common.small_world(c)
    return c

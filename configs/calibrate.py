"""Calibrate pass rates (complexity levels): `--config=configs/calibrate.py --config.model.checkpoint=DIR`.

Args: smoke, world=small, model=NAME (a preset of configs/common.py).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None):
    args = common.parse_arg(arg, {"smoke", "world", "model"})
    c = common.base("calibrate", args.get("model", "tiny"))
    c.grpo = common.grpo(c)
    c.calibrate = ml_collections.ConfigDict(dict(split="train", num_questions=256, k=8, temperature=1.0))
    if "smoke" in args:
        common.smoke(c)
    if args.get("world") == "small":
        common.small_world(c)
    return c

"""Evaluation of a policy in the synthetic world: `--config=configs/eval.py:policy=oracle`.

Arg presets (comma-separated k=v):
  policy=oracle|glance_only  the scripted policy to run (a trained model plugs in later)
  world=default|small        the world's size (small: a few-second world for smoke tests)
  n=INT                      evaluate only the first n questions of the split
  split=test|validation|train
  faults=FLOAT               share of searches that fail on purpose (fault injection)
"""

import ml_collections

from gog_jax.world.world import PRESETS, flat_config


def _parse(arg: str | None) -> dict[str, str]:
    out = {}
    for item in (arg or "").split(","):
        if item.strip():
            key, _, value = item.partition("=")
            out[key.strip()] = value.strip()
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _parse(arg)
    known = {"policy", "world", "n", "split", "faults"}
    if set(args) - known:
        raise ValueError(f"Unknown eval config args {sorted(set(args) - known)}; known: {sorted(known)}.")

    config = ml_collections.ConfigDict()
    config.mode = "eval"
    config.policy = args.get("policy", "oracle")
    config.split = args.get("split", "test")
    config.num_questions = int(args.get("n", -1))  # -1: the whole split
    config.benchmark = "gog_world"

    config.world = ml_collections.ConfigDict(flat_config(PRESETS[args.get("world", "default")]))
    config.index_dir = ""  # "" -> built in memory (about a second for the default world)

    config.env = ml_collections.ConfigDict(dict(
        max_turns=5, top_k=3, max_response_tokens=8192, fault_rate=float(args.get("faults", 0.0)),
        seed=0, brief_prompt=False, relative_coords=False))
    config.oracle = ml_collections.ConfigDict(dict(wrong_crop_share=0.25, seed=0))

    config.accuracy = "exact_match"  # gog_jax.agent.rewards.ACCURACY_FACTORIES
    config.lam = 0.1  # r = (1 - lam) * r_acc + lam * r_fmt
    config.write_trajectories = True
    config.num_pictures = 16  # pictures of the first episodes, gaze boxes drawn
    return config

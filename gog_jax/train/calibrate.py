"""Calibrate mode: each question's pass rate under a checkpoint, hence its complexity level.

    python -m gog_jax.main --config=configs/calibrate.py --config.model.checkpoint=DIR

k sampled rollouts per question; `level1` (pass rate >= 50%) / `level2` (< 50%) are saved with
the data as `pass_rates.json`, which GRPO's curriculum reads (and keeps updating online).
"""

import json
import os
from collections.abc import Sequence
from typing import Any

from gog_jax import hosts
from gog_jax.agent import env as env_lib
from gog_jax.rollout.runner import RolloutRunner, seed_of
from gog_jax.sampling import SamplingParams
from gog_jax.train import build
from gog_jax.train.curriculum import PassRates
from gog_jax.world import oracle as oracle_lib


def estimate(runner: RolloutRunner, questions: Sequence[env_lib.Question], k: int, params: SamplingParams,
             pass_rates: PassRates, seed: int = 0) -> PassRates:
    """k rollouts per question (one group each) -> accuracies folded into `pass_rates`."""
    for trajectory in runner.run(questions, params, group_size=k, seed=seed_of(seed, "calibrate")):
        pass_rates.update(trajectory.qid, [trajectory.reward["accuracy"]])
    return pass_rates


def level_counts(pass_rates: PassRates, qids: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for qid in qids:
        level = pass_rates.level(qid) or "unknown"
        counts[level] = counts.get(level, 0) + 1
    return counts


def run(config, workdir: str) -> dict[str, Any]:
    """The `calibrate` mode of `gog_jax.main`."""
    world, backend = build.world(config)
    model = build.model(config)
    runner = build.runner(config, model, backend, build.tokenizer(config))
    c = config.calibrate
    questions = [oracle_lib.env_question(world, q) for q in world.questions[c.split][:c.num_questions]]
    params = SamplingParams(temperature=c.temperature, max_new_tokens=config.grpo.max_new_tokens)
    pass_rates = estimate(runner, questions, c.k, params, PassRates(decay=config.grpo.pass_rate_decay), config.seed)
    runner.close()
    path = os.path.join(workdir, "pass_rates.json")
    counts = level_counts(pass_rates, [q.id for q in questions])
    summary = {"pass_rates": path, "questions": len(questions), "k": c.k, "levels": counts}
    if hosts.is_primary():
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(pass_rates.to_json())
        with open(os.path.join(workdir, "calibrate_summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    return summary

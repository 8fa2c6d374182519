"""Evaluating a model policy: rollouts through the runner, the same summary as scripted policies.

`evaluate_model` runs one greedy episode per question with the `RolloutRunner` and reports the
summary of `report.summarize` (DESIGN §2), so two checkpoints are compared on the same
questions with a paired bootstrap. `model_runner` builds the runner of the eval mode's
`policy=model` from its config (a Hugging Face folder in `model.checkpoint`, or the preset).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging
from flax import nnx

from gog_jax import sharding as sharding_lib
from gog_jax.agent import env as env_lib
from gog_jax.agent import rewards
from gog_jax.eval import report
from gog_jax.eval.episodes import EpisodeResult
from gog_jax.rollout.runner import RolloutRunner, Trajectory
from gog_jax.sampling import SamplingParams
from gog_jax.train import build

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=64)


def episode_results(trajectories: Sequence[Trajectory], questions: Sequence[env_lib.Question],
                    metas: Mapping[str, dict[str, Any]] | None = None) -> list[EpisodeResult]:
    """Trajectories as the `EpisodeResult`s scripted policies produce (meta: the question's labels)."""
    by_id = {q.id: q for q in questions}
    metas = metas or {}
    return [EpisodeResult(by_id[t.qid], dict(metas.get(t.qid, {})), t.turns, t.trace, t.prediction, t.truncated)
            for t in trajectories]


def evaluate_model(runner: RolloutRunner, questions: Sequence[env_lib.Question], params: SamplingParams = GREEDY,
                   benchmark: str = "gog_world", seed: int = 0, *, metas: Mapping[str, dict[str, Any]] | None = None,
                   skipped: Mapping[str, int] | None = None) -> tuple[dict[str, Any], list[Trajectory]]:
    """Summary (accuracy, per kind, actions, ...) and the trajectories, one per question in order.

    `metas` (question id -> its benchmark labels) feed the per-benchmark breakdowns; `skipped`
    (reason -> count) are the loader's skips.
    """
    trajectories = runner.run(questions, params, group_size=1, seed=seed)
    results = episode_results(trajectories, questions, metas)
    summary = report.summarize(results, [t.reward for t in trajectories], benchmark, skipped)
    summary["failed_to_start"] = len(questions) - len(trajectories)
    summary["response_tokens_mean"] = float(np.mean([t.loss_mask.sum() for t in trajectories])) if trajectories else 0.0
    return summary, trajectories


def model_runner(config, backend, accuracy: rewards.Accuracy) -> RolloutRunner:
    """Model (`build.model`: config.model.checkpoint or the preset), tokenizer and runner, the
    parameters placed on the config's mesh by its sharding rules."""
    if not config.model.checkpoint:
        logging.warning("policy=model without --config.model.checkpoint: evaluating a randomly initialised model")
    model = build.model(config)
    state = nnx.state(model)
    params = sharding_lib.put(state, sharding_lib.state_shardings(state, build.mesh(config), build.rules(config)))
    return build.runner(config, model, backend, build.tokenizer(config), params=params, accuracy=accuracy)


def paired_bootstrap(before: Sequence[float], after: Sequence[float], *, samples: int = 10000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Mean of after - before over the same questions, with a percentile bootstrap interval."""
    diff = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    if diff.size == 0:
        return {"delta": 0.0, "low": 0.0, "high": 0.0, "n": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (samples, diff.size))].mean(axis=1)
    tail = (1 - level) / 2
    return {"delta": float(diff.mean()), "low": float(np.quantile(means, tail)),
            "high": float(np.quantile(means, 1 - tail)), "n": int(diff.size)}

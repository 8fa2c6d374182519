"""Eval mode: run a policy over a split of the synthetic world and write what it did.

    python -m gog_jax.main --config=configs/eval.py:policy=oracle --workdir=DIR

writes `DIR/eval/summary.json` (DESIGN.md §2: accuracy, n, per_level by kind, per_benchmark,
action counts) and `DIR/eval/trajectories.jsonl` (one conversation per line, crops as source
image + box; images under `DIR/eval/images/`). Policies are registered by name in `POLICIES`;
a trained model's policy joins them through the rollout runner.
"""

import collections
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from gog_jax.agent import env as env_lib
from gog_jax.agent import gaze as gaze_lib
from gog_jax.agent import rewards, trajectory
from gog_jax.eval import report
from gog_jax.eval.episodes import EpisodeResult, Policy, run_episode
from gog_jax.world import index as index_lib
from gog_jax.world import oracle as oracle_lib
from gog_jax.world.questions import KINDS
from gog_jax.world.world import World, WorldConfig, build_world

ACTIONS = ("glance", "gaze", "search", "answer", "invalid")

# name -> factory(config, world, env_config) -> Policy
POLICIES: dict[str, Callable[..., Policy]] = {
    "oracle": lambda config, world, env_config: oracle_lib.Oracle(
        wrong_crop_share=config.oracle.wrong_crop_share, gaze_config=env_config.gaze, grammar=env_config.grammar,
        seed=config.oracle.seed),
    "glance_only": lambda config, world, env_config: oracle_lib.GlanceOnlyOracle(
        [e.name for e in world.entities], grammar=env_config.grammar),
}


def env_config_from(config) -> env_lib.EnvConfig:
    c = config.env
    return env_lib.EnvConfig(max_turns=c.max_turns, top_k=c.top_k, max_response_tokens=c.max_response_tokens,
                             fault_rate=c.fault_rate, seed=c.seed, brief_prompt=c.brief_prompt,
                             gaze=gaze_lib.GazeConfig(relative_coords=c.relative_coords))


def score(result: EpisodeResult, accuracy: rewards.Accuracy, lam: float) -> dict[str, float]:
    return rewards.episode_reward(result.prediction, result.question.answers, result.assistant_texts,
                                  accuracy=accuracy, question=result.question.question, lam=lam)


def summarize(results: Sequence[EpisodeResult], scores: Sequence[dict[str, float]],
              benchmark: str) -> dict[str, Any]:
    """The summary.json of DESIGN.md §2 (plus reward/format means and failure counts).

    `actions` counts every assistant turn of every episode by its action (totals, not means);
    `turns_mean` is the mean number of assistant turns per episode.
    """
    n = len(results)
    acc = [s["accuracy"] for s in scores]
    per_level = {}
    for kind in KINDS:
        vals = [a for a, r in zip(acc, results) if r.question.kind == kind]
        per_level[kind] = {"accuracy": float(np.mean(vals)) if vals else 0.0, "n": len(vals)}
    actions = collections.Counter(record["action"] for r in results for record in r.trace)
    summary = {
        "accuracy": float(np.mean(acc)) if n else 0.0,
        "n": n,
        "per_level": per_level,
        "per_benchmark": {benchmark: {"accuracy": float(np.mean(acc)) if n else 0.0, "n": n}},
        "actions": {**{a: int(actions.get(a, 0)) for a in ACTIONS},
                    "turns_mean": float(np.mean([len(r.trace) for r in results])) if n else 0.0},
        "reward_mean": float(np.mean([s["reward"] for s in scores])) if n else 0.0,
        "format_mean": float(np.mean([s["format"] for s in scores])) if n else 0.0,
        "faults": sum(bool(rec.get("fault")) for r in results for rec in r.trace),
        "errors": sum(bool(rec.get("error")) for r in results for rec in r.trace),
        "truncated": sum(r.truncated is not None for r in results),
    }
    return summary


def evaluate(world: World, backend, policy: Policy, env_config: env_lib.EnvConfig, split: str = "test",
             num_questions: int = -1, accuracy: rewards.Accuracy = rewards.exact_match, lam: float = 0.1,
             out_dir: str | None = None, benchmark: str = "gog_world", num_pictures: int = 0) -> dict[str, Any]:
    """Runs `policy` on the split's questions; returns the summary.

    With `out_dir`: `trajectories.jsonl`, the question images under `images/`, and pictures of
    the first `num_pictures` episodes (gaze boxes drawn) under `pictures/`.
    """
    questions = world.questions[split]
    questions = questions if num_questions < 0 else questions[:num_questions]
    env = env_lib.GoGEnv(backend, env_config)
    start = time.perf_counter()
    results, scores, records = [], [], []
    for question in questions:
        result = run_episode(env, policy, oracle_lib.env_question(world, question),
                             oracle_lib.question_meta(world, question))
        results.append(result)
        scores.append(score(result, accuracy, lam))
        if out_dir is not None:
            image_path = _save_image(result.question.image, out_dir, f"images/{question.qid}.png")
            boxes = [rec["box"] for rec in result.trace if rec.get("box") is not None]
            if len(records) < num_pictures:
                _save_image(report.draw_trajectory(result.question.image, boxes), out_dir,
                            f"pictures/{question.qid}.png")
            meta = {**result.meta, "kind": question.kind, "answer": list(question.answers),
                    "prediction": result.prediction, "truncated": result.truncated,
                    "trace": _json_safe(result.trace), **scores[-1]}
            records.append(trajectory.to_record(question.qid, result.turns, boxes, image_path, meta))
    summary = summarize(results, scores, benchmark)
    summary["episodes_seconds"] = time.perf_counter() - start
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "trajectories.jsonl"), "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, sort_keys=True) + "\n")
    return summary


def _save_image(image: np.ndarray, root: str, relative_path: str) -> str:
    path = os.path.join(root, relative_path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path)
    return relative_path


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def run(config, workdir: str) -> dict[str, Any]:
    """The `eval` mode of `gog_jax.main`."""
    if config.policy not in POLICIES:
        raise ValueError(f"Unknown policy {config.policy!r}; known: {sorted(POLICIES)}.")
    world = build_world(WorldConfig.from_flat(config.world))
    start = time.perf_counter()
    backend = index_lib.world_backend(world, cache_dir=config.index_dir or None)
    index_seconds = time.perf_counter() - start
    logging.info("world built in %.2f s, index in %.2f s", world.build_seconds, index_seconds)
    env_config = env_config_from(config)
    policy = POLICIES[config.policy](config, world, env_config)
    out_dir = os.path.join(workdir, "eval")
    summary = evaluate(world, backend, policy, env_config, split=config.split,
                       num_questions=config.num_questions, accuracy=rewards.make_accuracy(config.accuracy),
                       lam=config.lam, out_dir=out_dir if config.write_trajectories else None,
                       benchmark=config.benchmark, num_pictures=config.num_pictures)
    summary.update(policy=config.policy, split=config.split, world_seconds=world.build_seconds,
                   index_seconds=index_seconds)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    logging.info("eval summary written to %s", os.path.join(out_dir, "summary.json"))
    return summary

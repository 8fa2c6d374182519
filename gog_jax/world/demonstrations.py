"""SFT demonstrations: oracle trajectories (with an optional share of glance-only ones) as JSONL.

An SFT policy cloned from a perfect oracle gives GRPO groups with zero reward variance, so the
mixture replaces the oracle by the glance-only baseline on `glance_only_share` of the gaze
questions (DESIGN.md §6): the cloned policy then sometimes glances where it should gaze, and
RL has something to fix. A `rename_share` of the episodes is renamed (`rename.Renamer`): other
names and years throughout, so that the cloned policy reads its answers from the search results
instead of memorising the training entities.
"""

import json
import os
import zlib
from typing import Any

from PIL import Image

from gog_jax.agent import env as env_lib
from gog_jax.agent import rewards, trajectory
from gog_jax.eval.episodes import run_episode
from gog_jax.train import build
from gog_jax.world import oracle as oracle_lib
from gog_jax.world.index import world_backend
from gog_jax.world.rename import Renamer
from gog_jax.world.world import World, WorldConfig, build_world


def demonstration_policy(qid: str, kind: str, glance_only_share: float, seed: int) -> str:
    """'glance_only' for a deterministic `glance_only_share` of gaze questions, else 'oracle'."""
    return "glance_only" if kind == "gaze" and _uniform("mixture", qid, seed) < glance_only_share else "oracle"


def _uniform(purpose: str, qid: str, seed: int) -> float:
    return zlib.crc32(f"{purpose}/{seed}/{qid}".encode()) / 2**32


def write_demonstrations(world: World, backend, out_dir: str, split: str = "train", glance_only_share: float = 0.5,
                         wrong_crop_share: float = 0.25, env_config: env_lib.EnvConfig = env_lib.EnvConfig(),
                         num_questions: int = -1, seed: int = 0, rename_share: float = 0.0) -> dict[str, Any]:
    """Writes `out_dir/demonstrations.jsonl` (+ `out_dir/images/`); returns counts and accuracies
    (of the episodes as played, before any renaming)."""
    policies = {
        "oracle": oracle_lib.Oracle(wrong_crop_share, env_config.gaze, env_config.grammar, seed=seed),
        "glance_only": oracle_lib.GlanceOnlyOracle([e.name for e in world.entities], env_config.grammar),
    }
    env = env_lib.GoGEnv(backend, env_config)
    renamer = Renamer(world, seed)
    questions = world.questions[split]
    questions = questions if num_questions < 0 else questions[:num_questions]
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    counts = {"oracle": 0, "glance_only": 0}
    renamed = 0
    correct = {"oracle": 0, "glance_only": 0}
    path = os.path.join(out_dir, "demonstrations.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for question in questions:
            name = demonstration_policy(question.qid, question.kind, glance_only_share, seed)
            result = run_episode(env, policies[name], oracle_lib.env_question(world, question),
                                 oracle_lib.question_meta(world, question))
            image_path = f"images/{question.qid}.png"
            # zlib level 1: 3x faster than PIL's default 6 (2,400 scenes are seconds of the main job)
            Image.fromarray(result.question.image).save(os.path.join(out_dir, image_path), compress_level=1)
            accuracy = rewards.exact_match(result.prediction, question.answers)
            boxes = [rec["box"] for rec in result.trace if rec.get("box") is not None]
            meta = {**result.meta, "answer": list(question.answers), "policy": name, "accuracy": accuracy}
            record = trajectory.to_record(question.qid, result.turns, boxes, image_path, meta)
            if _uniform("rename", question.qid, seed) < rename_share:
                record = renamer(record, question.qid)
                renamed += 1
            f.write(_dumps(record) + "\n")
            counts[name] += 1
            correct[name] += accuracy
    return {"path": path, "counts": counts, "renamed": renamed,
            "accuracy": {k: correct[k] / counts[k] if counts[k] else 0.0 for k in counts}}


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def run(config, workdir: str) -> dict[str, Any]:
    """A mode entry (`run(config, workdir)`) for writing SFT demonstrations.

    Reads the fields of `configs/eval.py` (world, env, oracle, split, num_questions, index_dir)
    plus `glance_only_share`; writes `workdir/demonstrations/demonstrations.jsonl`.
    """
    world = build_world(WorldConfig.from_flat(config.world))
    backend = world_backend(world, cache_dir=config.get("index_dir") or None)
    return write_demonstrations(world, backend, os.path.join(workdir, "demonstrations"), split=config.split,
                                glance_only_share=config.glance_only_share,
                                wrong_crop_share=config.oracle.wrong_crop_share,
                                env_config=build.env_config(config), num_questions=config.num_questions,
                                seed=config.oracle.seed)

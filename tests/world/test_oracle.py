import importlib.util
import json
import os
import time

import numpy as np

from gog_jax.agent import env as env_lib
from gog_jax.agent import trajectory
from gog_jax.eval.episodes import run_episode
from gog_jax.eval.evaluate import evaluate
from gog_jax.world import oracle as oracle_lib
from gog_jax.world import demonstrations
from gog_jax.world.demonstrations import write_demonstrations
from gog_jax.world.world import SPLITS


def test_oracle_solves_the_test_split(default_world, default_backend):
    summary = evaluate(default_world, default_backend, oracle_lib.Oracle(), env_lib.EnvConfig(), split="test")
    assert summary["n"] == 600
    assert summary["accuracy"] >= 0.99, summary
    for kind in ("no_search", "glance", "gaze"):
        assert summary["per_level"][kind]["accuracy"] >= 0.99, summary
    assert summary["format_mean"] == 1.0 and summary["actions"]["invalid"] == 0


def test_glance_only_fails_the_gaze_kind(default_world, default_backend):
    policy = oracle_lib.GlanceOnlyOracle([e.name for e in default_world.entities])
    summary = evaluate(default_world, default_backend, policy, env_lib.EnvConfig(), split="test")
    assert summary["actions"]["gaze"] == 0
    assert summary["per_level"]["no_search"]["accuracy"] >= 0.99
    assert summary["per_level"]["glance"]["accuracy"] >= 0.97
    assert summary["per_level"]["gaze"]["accuracy"] <= 0.20, summary


def _episodes(world, backend, policy, questions, config=env_lib.EnvConfig()):
    env = env_lib.GoGEnv(backend, config)
    return [run_episode(env, policy, oracle_lib.env_question(world, q), oracle_lib.question_meta(world, q))
            for q in questions]


def test_some_gaze_episodes_recover_from_a_wrong_crop(default_world, default_backend):
    gaze = [q for q in default_world.questions["test"] if q.kind == "gaze"][:80]
    results = _episodes(default_world, default_backend, oracle_lib.Oracle(wrong_crop_share=0.25), gaze)
    recovered = [r for r in results if any("Wrong crop" in t for t in r.assistant_texts)]
    assert 0.1 <= len(recovered) / len(results) <= 0.4
    for r in recovered:
        boxes = [rec["box"] for rec in r.trace if rec["action"] == "gaze"]
        assert len(boxes) == 2 and boxes[0] != boxes[1]
        # The wrong crop's top result named another entity; the second crop's named the target.
        assert oracle_lib._titles(r.turns[3].text)[0] != r.meta["target_name"]
        assert oracle_lib._titles(r.turns[5].text)[0] == r.meta["target_name"]
        assert r.prediction in r.question.answers


def test_a_thousand_episodes_with_five_percent_faults(small_world, small_backend):
    questions = [q for split in SPLITS for q in small_world.questions[split]]
    config = env_lib.EnvConfig(fault_rate=0.05, seed=3)
    env = env_lib.GoGEnv(small_backend, config)
    policy = oracle_lib.Oracle()
    start = time.perf_counter()
    searches = faults = correct = 0
    for i in range(1000):
        q = questions[i % len(questions)]
        result = run_episode(env, policy, oracle_lib.env_question(small_world, q),
                             oracle_lib.question_meta(small_world, q))
        correct += result.prediction in q.answers
        for j, record in enumerate(result.trace):
            searches += record["action"] in ("glance", "gaze", "search")
            if record["fault"]:
                faults += 1
                assert record["error"] == "injected fault"
                observation = result.turns[3 + 2 * j] if 3 + 2 * j < len(result.turns) else None
                assert observation is None or "Search failed" in observation.text
    seconds = time.perf_counter() - start
    assert 0.02 < faults / searches < 0.09, (faults, searches)
    assert correct >= 950  # the oracle retries failed searches within the turn budget
    assert seconds < 60, seconds


def test_trajectory_record_round_trip_re_cuts_crops(default_world, default_backend, tmp_path):
    gaze = [q for q in default_world.questions["test"] if q.kind == "gaze"][:30]
    results = _episodes(default_world, default_backend, oracle_lib.Oracle(wrong_crop_share=0.5), gaze)
    result = next(r for r in results if len([t for t in r.trace if t["action"] == "gaze"]) == 2)
    boxes = [rec["box"] for rec in result.trace if rec.get("box") is not None]
    record = json.loads(json.dumps(trajectory.to_record(result.question.id, result.turns, boxes, "scene.png",
                                                        result.meta)))
    assert record["meta"]["kind"] == "gaze"
    turns = trajectory.from_record(record, lambda path: result.question.image, env_lib.EnvConfig().gaze)
    assert len(turns) == len(result.turns)
    for a, b in zip(turns, result.turns):
        assert a.role == b.role and len(a.parts) == len(b.parts)
        for pa, pb in zip(a.parts, b.parts):
            if isinstance(pa, str):
                assert pa == pb
            else:
                np.testing.assert_array_equal(pa, pb)


def test_demonstration_mixture(small_world, small_backend, tmp_path):
    stats = write_demonstrations(small_world, small_backend, str(tmp_path), split="train", glance_only_share=0.5)
    records = [json.loads(line) for line in open(stats["path"], encoding="utf-8")]
    assert len(records) == len(small_world.questions["train"])
    by_policy = {}
    for r in records:
        by_policy.setdefault(r["meta"]["policy"], []).append(r)
        assert (tmp_path / r["images"][0]).exists()
    assert all(r["meta"]["kind"] == "gaze" for r in by_policy["glance_only"])
    n_gaze = sum(q.kind == "gaze" for q in small_world.questions["train"])
    assert 0.2 <= len(by_policy["glance_only"]) / n_gaze <= 0.8
    assert stats["accuracy"]["oracle"] == 1.0
    assert stats["accuracy"]["glance_only"] <= 0.2


def test_demonstrations_mode_entry(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.spec_from_file_location("eval_config", os.path.join(root, "configs", "eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("world=small,split=train,n=20")
    config.glance_only_share = 0.5
    stats = demonstrations.run(config, str(tmp_path))
    assert sum(stats["counts"].values()) == 20
    assert (tmp_path / "demonstrations" / "demonstrations.jsonl").exists()


def test_oracle_needs_only_the_top_result(small_world, small_backend):
    config = env_lib.EnvConfig(top_k=1)
    for policy, gaze_max in ((oracle_lib.Oracle(), 1.0), (oracle_lib.GlanceOnlyOracle([e.name for e in small_world.entities]), 0.2)):
        summary = evaluate(small_world, small_backend, policy, config, split="test")
        assert summary["per_level"]["glance"]["accuracy"] == 1.0
        assert summary["per_level"]["gaze"]["accuracy"] <= gaze_max
        if isinstance(policy, oracle_lib.Oracle):
            assert summary["accuracy"] == 1.0

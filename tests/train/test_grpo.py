"""GRPO: the smoke preset end to end, exact resume, and compilations bounded by buckets."""

import glob
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import grpo as grpo_config
from gog_jax import main
from gog_jax.sampling import programs
from gog_jax.train import build, grpo
from gog_jax.train.curriculum import PassRates
from gog_jax.train.step import Learner
from gog_jax.world import oracle as oracle_lib


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`--config=configs/grpo.py:smoke` once for the whole session (the tests share its outputs)."""
    workdir = str(tmp_path_factory.mktemp("smoke"))
    summary = main.run_mode(grpo_config.get_config("smoke"), workdir)
    return workdir, summary


def test_smoke_leaves_logs_checkpoints_and_summary(smoke_run):
    workdir, summary = smoke_run
    for stage in ("sft", "grpo"):
        assert glob.glob(os.path.join(workdir, stage, "tensorboard", "events.out.tfevents.*"))
        assert os.path.isdir(os.path.join(workdir, stage, "checkpoints", "2"))
    assert os.path.exists(os.path.join(workdir, "sft", "export", "model.safetensors"))
    with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
        assert json.load(f)["grpo"]["steps"] == summary["grpo"]["steps"] == 2
    assert set(summary["accuracy_change"]) >= {"delta", "low", "high", "n"}
    last = summary["grpo"]["last_step"]
    assert last["groups"] == 2 and 0.0 <= last["tool_use/turns_mean"] <= 3
    with open(os.path.join(workdir, "eval", "grpo", "trajectories.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == summary["eval_questions"] == 4
    assert all(r["messages"][0]["role"] == "system" for r in records)
    assert os.path.getsize(os.path.join(workdir, "eval", "grpo", "report.html")) > 1000


def test_smoke_pipeline_with_qwen3_vl(tmp_path):
    """`configs/grpo.py:smoke,model=qwen3_vl_tiny` from the command line: SFT exports a Qwen3-VL
    folder, the pipeline reloads it by its config.json, rolls it out, trains and evaluates it.
    Compiling is the cost, so: one SFT and one GRPO step, one-turn episodes, one device (the
    Qwen2.5-VL runs above cover the mesh) and XLA's optimisations off (about 80 s instead of 150)."""
    flags = ["--config.sft.steps=1", "--config.grpo.steps=1", "--config.env.max_turns=1", "--config.curriculum.k=0",
             "--config.eval.num_questions=2", "--config.loss.attention_block=0"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
               JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    out = subprocess.run([sys.executable, "-m", "gog_jax.main", "--config=configs/grpo.py:smoke,model=qwen3_vl_tiny",
                          *flags, f"--workdir={tmp_path}"], env=env, capture_output=True, text=True, timeout=900,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout[out.stdout.rindex("\n{") + 1:])
    with open(tmp_path / "sft" / "export" / "config.json", encoding="utf-8") as f:
        assert json.load(f)["model_type"] == "qwen3_vl"
    last = summary["grpo"]["last_step"]
    assert summary["grpo"]["steps"] == 1 and last["groups"] == 2 and last["tokens"] > 0
    assert summary["eval_questions"] == 2 and (tmp_path / "grpo" / "checkpoints" / "1").is_dir()


def test_smoke_pipeline_on_two_hosts(smoke_run, tmp_path):
    """The whole smoke pipeline (SFT, export, calibrate, eval, GRPO, eval) as 2 processes x 4 CPU
    devices under jax.distributed: the hosts agree with each other exactly and with the
    single-process 8-device run; shared files are written once, by process 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path / "two_hosts"
    procs = []
    for i in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
                   JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                   JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gog_jax.main", "--config=configs/grpo.py:smoke", "--config.distributed=True",
             f"--workdir={workdir}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    summaries = [json.loads(log[log.rindex("\n{") + 1:log.rindex("}") + 1]) for log in logs]
    last = [_without_timings([s["grpo"]["last_step"]])[0] for s in summaries]
    assert last[0] == last[1]
    single = _without_timings([smoke_run[1]["grpo"]["last_step"]])[0]
    assert last[0].keys() == single.keys()
    for key, value in single.items():
        np.testing.assert_allclose(last[0][key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    with open(workdir / "summary.json", encoding="utf-8") as f:
        assert json.load(f)["accuracy_change"] == summaries[0]["accuracy_change"]
    assert (workdir / "sft" / "export" / "model.safetensors").exists()


def _spread_reward(prediction, golds, texts, question=""):
    """A reward that differs within groups for an untrained policy (text length mod 3)."""
    del prediction, golds, question
    return {"reward": float(len("".join(texts)) % 3), "accuracy": 0.0, "format": 0.0}


def _setup(config):
    world, backend = build.world(config)
    model = build.model(config)
    learner = Learner(model, build.optimizer(config, config.grpo, config.grpo.steps),
                      build.loss_config(config, "grpo"), build.mesh(config), build.rules(config))
    runner = build.runner(config, model, backend, build.tokenizer(config), params=learner.params)
    runner.reward_fn = _spread_reward
    questions = {q.qid: oracle_lib.env_question(world, q) for q in world.questions["train"][:16]}
    return learner, runner, questions


def _config(steps: int):
    config = grpo_config.get_config("smoke")
    config.grpo.update(steps=steps, eval_every=0, zero_variance="drop", learning_rate=1e-2, group_size=4,
                       max_new_tokens=16)
    config.env.max_turns = 2
    return config


def _without_timings(history):
    return [{k: v for k, v in h.items() if not k.endswith("_seconds") and "steps_per_sec" not in k}
            for h in history]


def test_resume_after_interruption_is_exact(tmp_path):
    straight = _config(2)
    learner, runner, questions = _setup(straight)
    initial = jax.device_get(learner.trainable)
    result = grpo.train(straight, str(tmp_path / "straight"), learner, runner, questions, PassRates())
    assert sum(h.get("groups_trained", 0) for h in result["history"]) > 0  # real updates happened
    final = jax.device_get(learner.trainable)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(final)))

    # the same run killed during step 2 (right after step 1's checkpoint), then resumed afresh
    learner, runner, questions = _setup(straight)
    calls = {"n": 0}
    run = runner.run

    def dies_at_step_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("pre-empted")
        return run(*args, **kwargs)
    runner.run = dies_at_step_2
    with pytest.raises(KeyboardInterrupt):
        grpo.train(straight, str(tmp_path / "resumed"), learner, runner, questions, PassRates())
    learner, runner, questions = _setup(straight)
    resumed = grpo.train(straight, str(tmp_path / "resumed"), learner, runner, questions, PassRates())
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(jax.device_get(learner.trainable))):
        np.testing.assert_array_equal(a, b)
    assert _without_timings(resumed["history"]) == _without_timings(result["history"])


def test_compilations_bounded_by_buckets(tmp_path):
    config = _config(4)
    learner, runner, questions = _setup(config)
    for fn in (programs.append, programs.decode, programs.encode, programs.configure, programs.fork,
               programs.fold_in_keys):
        fn.clear_cache()
    result = grpo.train(config, str(tmp_path), learner, runner, questions, PassRates())
    lengths = {h["sequence_tokens_mean"] for h in result["history"]}
    assert len(lengths) > 1  # rollout lengths varied across steps
    engine = runner.engine
    patch_buckets = programs.encode._cache_size()  # pylint: disable=protected-access
    assert patch_buckets <= 2  # scenes and crops
    assert programs.append._cache_size() <= len(engine.chunk_buckets) * (1 + patch_buckets)  # pylint: disable=protected-access
    assert programs.decode._cache_size() <= len(engine.window_buckets)  # pylint: disable=protected-access
    assert programs.configure._cache_size() == 1 and programs.fork._cache_size() == 1  # pylint: disable=protected-access
    assert programs.fold_in_keys._cache_size() == 1  # pylint: disable=protected-access
    (learner_programs,) = learner._programs.values()  # pylint: disable=protected-access
    assert all(fn._cache_size() == 1 for fn in learner_programs.values())  # pylint: disable=protected-access


def test_sft_cache_key_follows_config_vocabulary_and_data(tmp_path):
    """The SFT export is reused by hash: equal configs and data share it (wherever the cache is); a
    different world, a different tokenizer vocabulary (same path), edited JSONL or an edited image
    (same paths) do not."""
    from gog_jax.agent.tokenizer import train_tokenizer  # pylint: disable=import-outside-toplevel
    from gog_jax.train import sft  # pylint: disable=import-outside-toplevel
    data = tmp_path / "data" / "conv.jsonl"
    (data.parent / "images").mkdir(parents=True)
    (data.parent / "images" / "q.png").write_bytes(b"png-1")
    data.write_text(json.dumps({"id": "q", "images": ["images/q.png"], "messages": []}) + "\n", encoding="utf-8")
    base = grpo_config.get_config("smoke")
    key = sft.config_hash(base, str(data))
    assert key == sft.config_hash(grpo_config.get_config("smoke"), str(data))
    elsewhere = grpo_config.get_config("smoke")
    elsewhere.sft.cache_dir = str(tmp_path / "cache")  # where the cache lives is not what it holds
    elsewhere.sft.batch_cache_gb = 0.5  # nor does the memory its batches are kept in
    assert sft.config_hash(elsewhere, str(data)) == key
    other_world = grpo_config.get_config("smoke")
    other_world.world.seed = 1
    assert sft.config_hash(other_world, str(data)) != key
    (data.parent / "images" / "q.png").write_bytes(b"png-2")
    assert sft.config_hash(base, str(data)) != key
    key = sft.config_hash(base, str(data))
    data.write_text(data.read_text(encoding="utf-8").replace('"q"', '"r"', 1), encoding="utf-8")
    assert sft.config_hash(base, str(data)) != key
    vocab_a, vocab_b = tmp_path / "a", tmp_path / "b"
    train_tokenizer(["<glance/> an emblem"] * 4, 300).save(str(vocab_a))
    train_tokenizer(["<gaze> a crest, a badge"] * 4, 300).save(str(vocab_b))
    config = grpo_config.get_config("smoke")
    config.tokenizer = str(vocab_a)
    before = sft.config_hash(config, str(data))
    assert before != sft.config_hash(base, str(data))
    os.replace(vocab_b / "tokenizer.json", vocab_a / "tokenizer.json")  # same path, another vocabulary
    assert sft.config_hash(config, str(data)) != before

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gog_jax import main as main_lib
from gog_jax.agent import trajectory
from gog_jax.agent.env import EnvConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _get_config(arg):
    spec = importlib.util.spec_from_file_location("eval_config", os.path.join(ROOT, "configs", "eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _check_schema(summary):
    assert set(summary) >= {"accuracy", "n", "per_level", "per_benchmark", "actions"}
    assert set(summary["per_level"]) == {"no_search", "glance", "gaze"}
    for level in summary["per_level"].values():
        assert set(level) == {"accuracy", "n"}
    assert set(summary["actions"]) == {"glance", "gaze", "search", "answer", "invalid", "turns_mean"}
    assert sum(level["n"] for level in summary["per_level"].values()) == summary["n"]
    assert summary["per_benchmark"]["gog_world"]["n"] == summary["n"]


def test_config_presets():
    config = _get_config("policy=glance_only,world=small,n=5,faults=0.1")
    assert config.mode == "eval" and config.policy == "glance_only" and config.num_questions == 5
    assert config.world.test_size == 24 and config.env.fault_rate == 0.1
    assert _get_config(None).policy == "oracle" and _get_config(None).world.test_size == 600
    with pytest.raises(ValueError):
        _get_config("polcy=oracle")


@pytest.mark.parametrize("policy", ["oracle", "glance_only"])
def test_eval_mode_writes_summary_and_trajectories(policy, tmp_path):
    summary = main_lib.run_mode(_get_config(f"policy={policy},world=small"), str(tmp_path))
    with open(tmp_path / "eval" / "summary.json", encoding="utf-8") as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    _check_schema(on_disk)
    assert on_disk["n"] == 24 and on_disk["policy"] == policy
    if policy == "oracle":
        assert on_disk["accuracy"] == 1.0 and on_disk["actions"]["gaze"] >= on_disk["per_level"]["gaze"]["n"]
    else:
        assert on_disk["actions"]["gaze"] == 0 and on_disk["per_level"]["gaze"]["accuracy"] <= 0.2
        assert on_disk["per_level"]["glance"]["accuracy"] == 1.0
    assert len(list((tmp_path / "eval" / "pictures").iterdir())) == 16
    lines = (tmp_path / "eval" / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 24
    record = json.loads(lines[0])
    assert set(record) == {"id", "images", "messages", "meta"}
    turns = trajectory.from_record(
        record, lambda p: np.asarray(Image.open(tmp_path / "eval" / p).convert("RGB")), EnvConfig().gaze)
    assert turns[0].role == "system" and turns[-1].role == "assistant"


def test_command_line_entry(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gog_jax.main", "--config=configs/eval.py:policy=oracle,world=small,n=6",
                          f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text(encoding="utf-8"))
    _check_schema(summary)
    assert summary["n"] == 6 and summary["accuracy"] == 1.0

import importlib.util
import json
import os
import re
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
        crops = on_disk["crops"]  # the world's emblems sit in 56-px cells of 168-px scenes
        assert crops["n"] == on_disk["actions"]["gaze"] and 28 <= crops["width_mean"] <= 84
        assert 0.02 < crops["area_share_mean"] < 0.3
    else:
        assert on_disk["actions"]["gaze"] == 0 and on_disk["per_level"]["gaze"]["accuracy"] <= 0.2
        assert on_disk["crops"]["n"] == 0
        assert on_disk["per_level"]["glance"]["accuracy"] == 1.0
    assert len(list((tmp_path / "eval" / "pictures").iterdir())) == 16
    lines = (tmp_path / "eval" / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 24
    record = json.loads(lines[0])
    assert set(record) == {"id", "images", "messages", "meta"}
    turns = trajectory.from_record(
        record, lambda p: np.asarray(Image.open(tmp_path / "eval" / p).convert("RGB")), EnvConfig().gaze)
    assert turns[0].role == "system" and turns[-1].role == "assistant"


@pytest.mark.parametrize("model,frame", [("tiny", 168), ("qwen3_vl_tiny", 1000)])
def test_the_oracle_gazes_in_the_frame_of_the_model_family(model, frame, tmp_path):
    """SFT clones the oracle, so its boxes must be in the model's frame: pixels of the 168-px scene
    as Qwen2.5-VL sees it, 0-1000 of the image for Qwen3-VL (whose presets change nothing else here)."""
    summary = main_lib.run_mode(_get_config(f"policy=oracle,world=small,n=12,model={model}"), str(tmp_path))
    assert summary["accuracy"] == 1.0 and summary["actions"]["gaze"] > 0
    texts = [c["text"] for line in (tmp_path / "eval" / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()
             for m in json.loads(line)["messages"] if m["role"] == "assistant" for c in m["content"]]
    coords = [float(v) for t in texts for box in re.findall(r"<gaze>\[(.*?)\]</gaze>", t) for v in box.split(",")]
    assert coords and 0 <= min(coords) and max(coords) == frame


def test_command_line_entry(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gog_jax.main", "--config=configs/eval.py:policy=oracle,world=small,n=6",
                          f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text(encoding="utf-8"))
    _check_schema(summary)
    assert summary["n"] == 6 and summary["accuracy"] == 1.0


# ---------------------------------------------------------------------------- policy=model, benchmarks


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A Hugging Face folder as the SFT/GRPO export writes it (random tiny weights, default tokenizer)."""
    from flax import nnx  # pylint: disable=import-outside-toplevel

    from gog_jax.models.qwen2_5_vl import Qwen25VL, presets, save_pretrained  # pylint: disable=import-outside-toplevel
    from gog_jax.world.corpus import default_tokenizer  # pylint: disable=import-outside-toplevel

    path = str(tmp_path_factory.mktemp("checkpoint"))
    save_pretrained(Qwen25VL(presets.model_config(presets.get("tiny")), rngs=nnx.Rngs(0)), path)
    default_tokenizer().save(path)
    return path


def _small_model_run(config, checkpoint):
    """Short episodes on a small engine: the test checks the plumbing, not what random weights say."""
    config.model.checkpoint = checkpoint
    config.model.dtype = "float32"
    config.env.update(max_turns=2, prompt="brief")
    config.engine.update(num_slots=2, max_seq_len=512, decode_steps=8)
    config.vision.max_pixels = 168 * 168
    config.max_new_tokens = 8
    return config


def test_model_policy_on_the_world(checkpoint, tmp_path):
    config = _small_model_run(_get_config("policy=model,world=small,n=2"), checkpoint)
    summary = main_lib.run_mode(config, str(tmp_path))
    _check_schema(summary)
    assert summary["n"] == 2 and summary["policy"] == "model" and summary["failed_to_start"] == 0
    assert summary["judge"] == "exact_match" and summary["response_tokens_mean"] > 0
    assert 2 <= summary["actions"]["turns_mean"] * 2 <= 4  # at most max_turns assistant turns each
    out = tmp_path / "eval"
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["n"] == 2
    assert len((out / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count('<section class="episode') == 2
    assert html.count('class="assistant"') == round(summary["actions"]["turns_mean"] * 2)  # every turn shown
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_model_policy_on_a_benchmark(checkpoint, tmp_path, monkeypatch):
    from gog_jax.eval import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel

    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(images / "a.png")
    (images / "broken.jpg").write_bytes(b"not an image")

    def qa(question, truths):
        return {"question": question, "question_type": "person", "Ground_Truth_List": truths}
    rows = [{"id": "0_1", "img_path": "a.png", "level1_qa": qa("Who?", ["Ann"]), "level2_qa": qa("Where?", ["Oslo"])},
            {"id": "0_2", "img_path": "broken.jpg", "level1_qa": qa("Who?", ["Bob"])},
            {"id": "0_3", "img_path": "gone.png", "level1_qa": qa("Who?", ["Cy"])}]
    data = tmp_path / "benchmark.json"
    data.write_text(json.dumps(rows), encoding="utf-8")

    searched = []

    class Backend:  # stands in for the web backend (no network in tests)
        def image_search(self, image, k):
            searched.append(image.shape)
            return []

        def text_search(self, query, k):
            return []
    monkeypatch.setattr(evaluate_lib, "web_backend", lambda config: Backend())

    config = _get_config(f"benchmark=livevqa,data={data},image_dir={images}")
    assert config.policy == "model" and config.accuracy == "" and evaluate_lib.accuracy_name(config) == "llm_judge"
    assert config.env.prompt == "full" and config.model.dtype == "bfloat16"  # a real checkpoint's settings
    config = _small_model_run(config, checkpoint)
    config.accuracy = "f1"  # set: overrides the benchmark's LLM judge
    summary = main_lib.run_mode(config, str(tmp_path / "work"))
    bench = summary["per_benchmark"]["livevqa"]
    assert summary["n"] == bench["n"] == 2 and summary["judge"] == "f1"
    assert bench["skipped"] == {"corrupt_image": 1, "missing_image": 1} and bench["skipped_total"] == 2
    assert set(bench["by"]["level"]) == {"level1", "level2"} and set(bench["by"]["question_type"]) == {"person"}
    assert summary["per_level"]["gaze"]["n"] == 0  # benchmark questions have no synthetic-world kind
    assert (tmp_path / "work" / "eval" / "report.html").exists()


def test_benchmarks_need_the_model_policy_and_a_file():
    with pytest.raises(ValueError, match="needs policy=model"):
        main_lib.run_mode(_get_config("benchmark=fvqa,data=x.parquet,policy=oracle"), "/nonexistent")
    with pytest.raises(ValueError, match="data=PATH"):
        main_lib.run_mode(_get_config("benchmark=fvqa"), "/nonexistent")
    with pytest.raises(ValueError, match="Unknown benchmark"):
        main_lib.run_mode(_get_config("benchmark=vqa2,data=x"), "/nonexistent")


def test_web_backend_is_cached_and_reads_its_key_from_the_environment(tmp_path, monkeypatch):
    from gog_jax.eval import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
    from gog_jax.search import CachedBackend, SearchError, WebSearchBackend  # pylint: disable=import-outside-toplevel

    config = _get_config("benchmark=fvqa,data=x.parquet")
    config.search.update(cache_path=str(tmp_path / "cache" / "search.sqlite"), api_key_env="GOG_TEST_SEARCH_KEY",
                         base_url="http://127.0.0.1:9")
    monkeypatch.delenv("GOG_TEST_SEARCH_KEY", raising=False)
    with pytest.raises(SearchError, match="GOG_TEST_SEARCH_KEY"):
        evaluate_lib.web_backend(config)
    monkeypatch.setenv("GOG_TEST_SEARCH_KEY", "secret-123")
    backend = evaluate_lib.web_backend(config)
    assert isinstance(backend, CachedBackend) and isinstance(backend.backend, WebSearchBackend)
    assert backend.backend.config.base_url == "http://127.0.0.1:9" and "secret-123" not in backend.identifier
    assert (tmp_path / "cache" / "search.sqlite").exists()
    config.search.cache_path = ""
    assert isinstance(evaluate_lib.web_backend(config), WebSearchBackend)

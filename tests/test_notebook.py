"""The demo notebook runs top to bottom on the CPU, offline, and matches its generator script.

nbclient, nbformat and ipykernel are test requirements: without them this module fails to
import (a failure, not a skip).
"""

import importlib.util
import json
import os
import sys

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
DEMO = os.path.join(NOTEBOOKS, "demo.ipynb")


def _generator():
    spec = importlib.util.spec_from_file_location("make_demo", os.path.join(NOTEBOOKS, "make_demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_is_generated_and_stored_without_outputs():
    stored = nbformat.read(DEMO, as_version=4)
    assert stored == _generator().build(), "notebooks/demo.ipynb is stale: run python notebooks/make_demo.py"
    assert all(not cell.get("outputs") for cell in stored.cells if cell.cell_type == "code")


def _kernel_env(tmp_path, monkeypatch):
    """A `python3` kernel spec running this interpreter (the venv's python, whatever is installed
    system-wide), with the repository importable, on the CPU."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, as on a laptop or Colab
    monkeypatch.delenv("GOG_CHECKPOINT", raising=False)


def test_demo_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    _kernel_env(tmp_path, monkeypatch)
    notebook = nbformat.read(DEMO, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails

    def outputs(cell_index):
        return notebook.cells[cell_index].outputs

    def text(cell_index):
        return "".join(o.get("text", "") for o in outputs(cell_index) if o.output_type == "stream")

    def pictures(cell_index):
        return sum("image/png" in o.get("data", {}) for o in outputs(cell_index))

    cells = notebook.cells
    assert not any(o.output_type == "error" for c in cells if c.cell_type == "code" for o in c.outputs)
    assert "pip" not in "".join(text(i) for i in range(len(cells)) if cells[i].cell_type == "code")  # no install
    by_source = {c.source.split("\n", 1)[0]: i for i, c in enumerate(cells) if c.cell_type == "code"}
    episode = by_source["while not env.done:"]
    steps = text(episode)
    # the oracle gazes wrongly, reflects, gazes again: one picture (box + crop) per gaze
    assert steps.count(": gaze\n") == 2 and pictures(episode) == 2
    assert "<information>" in steps and "<answer>" in steps
    summary = text(episode + 1)
    prediction, gold = summary.split("| gold:")
    assert prediction.split("prediction:")[1].strip() in gold and pictures(episode + 1) == 1
    model_run = text(len(cells) - 2)
    assert "prediction:" in model_run and "sampled of" in model_run and pictures(len(cells) - 2) == 1

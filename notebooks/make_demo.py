"""Writes `demo.ipynb` from the cells below (outputs cleared): `python notebooks/make_demo.py`.

The notebook is data; this script is its source, so a change to the demo is a readable diff.
tests/test_notebook.py executes the notebook and checks that it matches this script.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# Glance or Gaze, step by step

A vision-language model answers a question about an image in turns: each turn it thinks, then
**glances** (searches with the whole image), **gazes** (crops a box and searches with the crop),
**searches** text, or **answers**. This notebook runs on the embedded synthetic world, offline,
on a CPU, in about a minute:

1. one episode of the scripted oracle policy, with a picture of every step;
2. a model: written as a Hugging Face folder, loaded back the way a real Qwen2.5-VL checkpoint
   is loaded, and run on the same question by the rollout runner.

On Colab, clone the repository first and open this notebook from its `notebooks/` folder."""),
    ("code", """import importlib.util
import os
import sys

if importlib.util.find_spec("gog_jax") is None:  # not installed yet (a fresh Colab runtime)
    %pip install -q -e ..
    sys.path.insert(0, os.path.abspath(".."))  # importable without restarting the kernel"""),
    ("code", """import numpy as np
from IPython.display import display
from PIL import Image

from gog_jax.eval.report import draw_trajectory


def show(*images, scale=2):
    \"\"\"Shows uint8 [H, W, 3] images side by side, enlarged `scale` times.\"\"\"
    images = [Image.fromarray(np.asarray(im, np.uint8)) for im in images]
    images = [im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) for im in images]
    row = Image.new("RGB", (sum(im.width + 8 for im in images), max(im.height for im in images)), "white")
    x = 0
    for im in images:
        row.paste(im, (x, 0))
        x += im.width + 8
    display(row)"""),
    ("md", """## The synthetic world

Scenes of emblems of fictional organisations, a knowledge base about them, and a local search
index (image near-duplicate search and BM25 text search). A *gaze* question points at one emblem
in a cluttered scene: a whole-image search returns distractors, a crop of the right emblem finds it."""),
    ("code", """from gog_jax.world import SMALL_WORLD, build_world
from gog_jax.world.index import world_backend

world = build_world(SMALL_WORLD)
backend = world_backend(world)
question = next(q for q in world.questions["test"] if q.kind == "gaze")
print(question.question, "| gold:", question.answers)
show(world.image(question), scale=1)"""),
    ("md", """## One episode of the scripted oracle, step by step

The oracle knows the ground truth but acts only through the protocol. Here it first crops a
wrong emblem on purpose, reads the results, says why that was wrong, and crops again."""),
    ("code", """from gog_jax.agent import env as env_lib
from gog_jax.eval.episodes import Episode
from gog_jax.world import oracle

env_config = env_lib.EnvConfig(prompt="brief")
env = env_lib.GoGEnv(backend, env_config)
policy = oracle.Oracle(wrong_crop_share=1.0, gaze_config=env_config.gaze)
meta = oracle.question_meta(world, question)  # ground truth: for the scripted policy only
env.reset(oracle.env_question(world, question))
print(env.turns[0].text)  # the system prompt"""),
    ("code", """while not env.done:
    text = policy(Episode(env.question, list(env.turns), list(env.trace), env_config.max_turns, meta))
    step = env.step(text)
    record = env.trace[-1]
    print(f"--- turn {record['turn']}: {record['action']}\\n{text}")
    if record["box"] is not None:  # the box drawn on the image, and the crop the search used
        show(draw_trajectory(env.question.image, [record["box"]], scale=1), step.observation.image)
    if step.observation is not None:
        print(step.observation.text)"""),
    ("code", """boxes = [r["box"] for r in env.trace if r["box"] is not None]
print("prediction:", env.prediction, "| gold:", question.answers)
show(draw_trajectory(env.question.image, boxes), scale=1)  # every gaze, numbered in turn order"""),
    ("md", """## A model policy

Models load from a Hugging Face folder (`config.json`, `model.safetensors`, `tokenizer.json`),
as the SFT and GRPO exports write them. For a real checkpoint, point `from_pretrained` at a
downloaded Qwen2.5-VL-7B-Instruct folder:

```python
model = weights.from_pretrained("/models/Qwen2.5-VL-7B-Instruct", "bfloat16")
tokenizer = load_tokenizer("/models/Qwen2.5-VL-7B-Instruct")
```

To stay offline, this notebook writes the `tiny` preset (random weights) to a folder and loads
that. Set `GOG_CHECKPOINT` to a trained export (e.g. the SFT export of `configs/sft.py`) to
watch a trained policy instead."""),
    ("code", """import tempfile

from flax import nnx

from gog_jax.agent.tokenizer import load_tokenizer
from gog_jax.models.qwen2_5_vl import Qwen25VL, presets, weights
from gog_jax.world.corpus import default_tokenizer

folder = os.environ.get("GOG_CHECKPOINT", "")
if not folder:
    folder = tempfile.mkdtemp(prefix="tiny_qwen_")
    weights.save_pretrained(Qwen25VL(presets.model_config(presets.get("tiny")), rngs=nnx.Rngs(0)), folder)
    default_tokenizer().save(folder)
print(folder, sorted(os.listdir(folder)))"""),
    ("code", """import jax

model = weights.from_pretrained(folder)
tokenizer = load_tokenizer(folder)
n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model)))
print(f"{n_params:,} parameters, vocabulary of {tokenizer.vocab_size}")"""),
    ("md", """The rollout runner drives the sampling engine (prefill once, decode until an action's closing
tag, append each observation to the KV cache) and the environment, for many episodes at once;
here one greedy episode."""),
    ("code", """from gog_jax.agent.render import VisionSpec
from gog_jax.rollout.runner import RolloutRunner
from gog_jax.sampling import Engine, SamplingParams

engine = Engine(model, num_slots=1, max_seq_len=512, decode_steps=8)
runner = RolloutRunner(engine, backend, tokenizer, env_lib.EnvConfig(prompt="brief", max_turns=3),
                       VisionSpec(max_pixels=168 * 168))
(trajectory,) = runner.run([oracle.env_question(world, question)], SamplingParams(temperature=0.0, max_new_tokens=24))
runner.close()"""),
    ("code", """turns = [t for t in trajectory.turns if t.role == "assistant"]
for record, turn in zip(trajectory.trace, turns):
    print(f"--- turn {record['turn']}: {record['action']}\\n{turn.text!r}")
    if record["error"]:
        print("environment:", record["error"])
boxes = [r["box"] for r in trajectory.trace if r["box"] is not None]
show(draw_trajectory(trajectory.images[0], boxes), *trajectory.images[1:], scale=1)
print("prediction:", trajectory.prediction, "| reward:", trajectory.reward,
      f"| {int(trajectory.loss_mask.sum())} sampled of {len(trajectory.token_ids)} tokens")"""),
    ("md", """Random weights babble and are told so by the environment's error observations; a trained
export glances, gazes and answers. Next steps, from the repository root:

```
python -m gog_jax.main --config=configs/grpo.py:smoke            # SFT, calibration, GRPO, evaluation
python -m gog_jax.main --config=configs/eval.py:policy=model --config.model.checkpoint=EXPORT
```

The eval mode writes `eval/summary.json`, `eval/trajectories.jsonl`, `eval/report.html` (every
turn, box and crop of the first episodes) and TensorBoard pictures."""),
]


def build() -> nbformat.NotebookNode:
    cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    notebook = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives the same file
    return notebook


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.ipynb")
    nbformat.write(build(), path)
    print(f"wrote {path}")

"""What an evaluation reports: the summary (DESIGN §2), pictures of trajectories, an HTML page.

- `summarize`: accuracy overall, per kind (`per_level`), per benchmark (skips and breakdowns by
  the questions' own fields), action counts.
- `draw_trajectory`: the question image with every gaze box drawn, in turn order.
- `write_html`: one self-contained page (images inlined as PNG data URIs) showing each episode
  turn by turn. Its markup is machine-checkable: every gaze action with a valid box is a
  `<figure class="gaze" data-box="x1,y1,x2,y2">` holding the image with that box drawn and the
  crop the model saw (`<img class="crop">`).
"""

import base64
import collections
import html
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gog_jax.eval.episodes import EpisodeResult
from gog_jax.world.questions import KINDS

ACTIONS = ("glance", "gaze", "search", "answer", "invalid")
# Fields of a question (its kind, or its benchmark's own labels) that summaries break accuracy down by.
BREAKDOWNS = ("kind", "level", "question_type", "language")

# Gaze boxes in turn order: the first in orange, later ones in blue (the last is the one that counted).
_FIRST, _LATER = (255, 140, 0), (20, 90, 255)


# ---------------------------------------------------------------------------- summary


def _accuracy(values: Sequence[float]) -> dict[str, Any]:
    return {"accuracy": float(np.mean(values)) if values else 0.0, "n": len(values)}


def breakdown(results: Sequence[EpisodeResult], acc: Sequence[float]) -> dict[str, dict[str, dict[str, Any]]]:
    """field -> value -> {accuracy, n}, for each field of `BREAKDOWNS` that some question carries."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for field in BREAKDOWNS:
        groups: dict[str, list[float]] = collections.defaultdict(list)
        for a, r in zip(acc, results):
            value = r.question.kind if field == "kind" else r.meta.get(field)
            if value not in (None, ""):
                groups[str(value)].append(a)
        if groups:
            out[field] = {value: _accuracy(vals) for value, vals in sorted(groups.items())}
    return out


def summarize(results: Sequence[EpisodeResult], scores: Sequence[dict[str, float]], benchmark: str,
              skipped: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The summary.json of DESIGN.md §2 (plus reward/format means and failure counts).

    `actions` counts every assistant turn of every episode by its action (totals, not means);
    `turns_mean` is the mean number of assistant turns per episode. `per_benchmark[benchmark]`
    adds the loader's skip counts by reason and, under `by`, accuracy per kind / level /
    question type / language where the questions carry one.
    """
    n = len(results)
    acc = [s["accuracy"] for s in scores]
    per_level = {kind: _accuracy([a for a, r in zip(acc, results) if r.question.kind == kind]) for kind in KINDS}
    skipped = {reason: int(count) for reason, count in sorted((skipped or {}).items())}
    actions = collections.Counter(record["action"] for r in results for record in r.trace)
    return {
        "accuracy": float(np.mean(acc)) if n else 0.0,
        "n": n,
        "per_level": per_level,
        "per_benchmark": {benchmark: {**_accuracy(acc), "skipped": skipped, "skipped_total": sum(skipped.values()),
                                      "by": breakdown(results, acc)}},
        "actions": {**{a: int(actions.get(a, 0)) for a in ACTIONS},
                    "turns_mean": float(np.mean([len(r.trace) for r in results])) if n else 0.0},
        "reward_mean": float(np.mean([s["reward"] for s in scores])) if n else 0.0,
        "format_mean": float(np.mean([s["format"] for s in scores])) if n else 0.0,
        "faults": sum(bool(rec.get("fault")) for r in results for rec in r.trace),
        "errors": sum(bool(rec.get("error")) for r in results for rec in r.trace),
        "truncated": sum(r.truncated is not None for r in results),
        "crops": crop_stats(results),
    }


def crop_stats(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Gaze crops in original pixels: count, mean width/height and mean share of the image area."""
    sizes = [((b[2] - b[0]), (b[3] - b[1]), r.question.image.shape[0] * r.question.image.shape[1])
             for r in results for b in (rec.get("box") for rec in r.trace) if b is not None]
    if not sizes:
        return {"n": 0, "width_mean": 0.0, "height_mean": 0.0, "area_share_mean": 0.0}
    w, h, area = (np.asarray(v, np.float64) for v in zip(*sizes))
    return {"n": len(sizes), "width_mean": float(w.mean()), "height_mean": float(h.mean()),
            "area_share_mean": float(np.mean(w * h / area))}


# ---------------------------------------------------------------------------- pictures


def draw_trajectory(image: np.ndarray, boxes: list, scale: int = 2) -> np.ndarray:
    """uint8 [H, W, 3] + boxes (x1, y1, x2, y2 in original pixels) -> uint8 [H*scale, W*scale, 3]."""
    h, w = image.shape[:2]
    canvas = Image.fromarray(np.asarray(image, np.uint8)).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (int(v) * scale for v in box)
        colour = _FIRST if i == 0 else _LATER
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=2)
        draw.text((x1 + 3, y1 + 2), str(i + 1), fill=colour)
    return np.asarray(canvas)


def picture_scale(image: np.ndarray) -> int:
    """Small synthetic scenes are drawn at 2x so the boxes read; real photos at 1x."""
    return 2 if max(image.shape[:2]) <= 256 else 1


# ---------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
section.episode { border: 1px solid #ccc; border-radius: 6px; padding: 0.8em 1em; margin-bottom: 1.5em; }
section.episode.correct { border-left: 6px solid #2a2; } section.episode.wrong { border-left: 6px solid #c33; }
pre { white-space: pre-wrap; background: #f6f6f6; padding: 0.4em; margin: 0.3em 0; }
pre.assistant { background: #eef4ff; }
figure { display: inline-block; margin: 0.3em 1em 0.3em 0; vertical-align: top; }
figure img { image-rendering: pixelated; margin-right: 0.5em; vertical-align: top; }
img.crop { outline: 2px solid #1a5aff; }
.error { color: #c33; } dt { font-weight: bold; } dd { margin: 0 0 0.3em 1em; }
table.summary td { padding: 0 0.8em 0 0; }
"""


def png_data_uri(image: np.ndarray, max_side: int = 640) -> str:
    """uint8 [H, W, 3] -> `data:image/png;base64,...`, shrunk to `max_side` (large photos stay light)."""
    picture = Image.fromarray(np.asarray(image, np.uint8))
    if max(picture.size) > max_side:
        picture.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(image: np.ndarray, css_class: str, alt: str, max_side: int = 640) -> str:
    # a 56-px crop is shown at twice its size (pixelated by the CSS), larger pictures as they are
    width = f' width="{2 * image.shape[1]}"' if max(image.shape[:2]) < 128 else ""
    return f'<img class="{css_class}" alt="{html.escape(alt)}"{width} src="{png_data_uri(image, max_side)}">'


def _pre(text: str, css_class: str) -> str:
    return f'<pre class="{css_class}">{html.escape(text)}</pre>'


def _turn_html(number: int, assistant: str, record: dict[str, Any], observation, image: np.ndarray) -> str:
    """One assistant turn: its text, the gaze (box drawn + crop) or other images, the observation."""
    crops = observation.images if observation is not None else []
    parts = [f'<li class="turn" data-action="{html.escape(record.get("action", ""))}">',
             _pre(assistant, "assistant")]
    box = record.get("box")
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        parts.append(f'<figure class="gaze" data-box="{x1},{y1},{x2},{y2}">'
                     + _img(draw_trajectory(image, [box], picture_scale(image)), "gaze-box", f"turn {number} box")
                     + "".join(_img(c, "crop", f"turn {number} crop", 320) for c in crops)
                     + f"<figcaption>turn {number}: gaze [{x1}, {y1}, {x2}, {y2}]</figcaption></figure>")
    elif crops:
        parts.append('<figure class="images">' + "".join(_img(c, "crop", f"turn {number} image", 320)
                                                         for c in crops) + "</figure>")
    if record.get("error"):
        parts.append(f'<p class="error">{html.escape(str(record["error"]))}</p>')
    if observation is not None:
        parts.append(_pre(observation.text, "observation"))
    parts.append("</li>")
    return "".join(parts)


def episode_html(index: int, result: EpisodeResult, score: Mapping[str, float] | None = None) -> str:
    """One `<section class="episode">`: question and image (all boxes), each turn, outcome."""
    q = result.question
    boxes = [rec["box"] for rec in result.trace if rec.get("box") is not None]
    correct = None if score is None else score.get("accuracy", 0.0) >= 0.5
    verdict = "" if correct is None else (" correct" if correct else " wrong")
    header = " · ".join(html.escape(str(x)) for x in (q.id, q.kind or result.meta.get("level")) if x)
    parts = [f'<section class="episode{verdict}" id="episode-{index}" data-qid="{html.escape(q.id)}">',
             f"<h2>{header}</h2>", f'<p class="question">{html.escape(q.question)}</p>',
             '<figure class="overview">' + _img(draw_trajectory(q.image, boxes, picture_scale(q.image)),
                                                "question-image", "question image")
             + f"<figcaption>{len(boxes)} gaze box(es), numbered in turn order</figcaption></figure>",
             '<ol class="turns">']
    # turns: system, question, then assistant turns each followed by its observation (the last has none)
    later = result.turns[2:]
    assistant_indexes = [i for i, t in enumerate(later) if t.role == "assistant"]
    for number, (i, record) in enumerate(zip(assistant_indexes, result.trace), start=1):
        observation = later[i + 1] if i + 1 < len(later) and later[i + 1].role == "user" else None
        parts.append(_turn_html(number, later[i].text, record, observation, q.image))
    parts.append("</ol><dl class=\"outcome\">")
    parts.append(f'<dt>prediction</dt><dd class="prediction">{html.escape(str(result.prediction))}</dd>')
    parts.append(f'<dt>gold</dt><dd class="gold">{html.escape(" | ".join(q.answers))}</dd>')
    if score is not None:
        scores = ", ".join(f"{k} {float(v):.3g}" for k, v in sorted(score.items()))
        parts.append(f'<dt>result</dt><dd class="verdict">{"correct" if correct else "wrong"} ({scores})</dd>')
    if result.truncated:
        parts.append(f'<dt>ended by</dt><dd class="truncated">{html.escape(result.truncated)}</dd>')
    parts.append("</dl></section>")
    return "\n".join(parts)


def write_html(path: str, episodes: Sequence[EpisodeResult], scores: Sequence[Mapping[str, float]] | None = None,
               summary: Mapping[str, Any] | None = None, title: str = "Glance-or-Gaze evaluation") -> str:
    """Writes one self-contained HTML page of `episodes` (with their `scores` and the run's `summary`)."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if summary is not None:
        rows = [("accuracy", f"{summary.get('accuracy', 0.0):.3f}"), ("questions", summary.get("n", 0)),
                *((k, v) for k, v in summary.get("actions", {}).items())]
        body.append('<table class="summary">' + "".join(f"<tr><td>{html.escape(str(k))}</td>"
                                                       f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
                    + "</table>")
    body.append(f"<p>{len(episodes)} episode(s).</p>")
    for i, result in enumerate(episodes):
        body.append(episode_html(i, result, scores[i] if scores is not None else None))
    page = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path

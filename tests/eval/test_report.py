import base64
import html.parser
import io

import numpy as np
import pytest
from PIL import Image

from gog_jax.agent import env as env_lib
from gog_jax.eval import report
from gog_jax.eval.episodes import EpisodeResult
from gog_jax.eval.evaluate import run_scripted
from gog_jax.eval.report import draw_trajectory
from gog_jax.world import oracle as oracle_lib
from gog_jax.world.index import world_backend
from gog_jax.world.world import SMALL_WORLD, build_world


def test_boxes_are_drawn_at_scale():
    image = np.full((168, 168, 3), 200, np.uint8)
    out = draw_trajectory(image, [(56, 0, 112, 56), (0, 0, 56, 56)], scale=2)
    assert out.shape == (336, 336, 3)
    assert tuple(out[60, 112]) == (255, 140, 0)  # left edge of the first box, in orange
    assert tuple(out[60, 0]) == (20, 90, 255)  # left edge of the second box, in blue
    assert tuple(out[200, 200]) == (200, 200, 200)  # untouched elsewhere


class _Page(html.parser.HTMLParser):
    """Per episode section: its gaze figures (box + the images inside) and every crop image."""

    def __init__(self):
        super().__init__()
        self.episodes: list[dict] = []
        self._figure: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "section" and "episode" in classes:
            self.episodes.append({"qid": attrs["data-qid"], "gazes": [], "crops": [], "correct": "correct" in classes})
        elif tag == "figure" and "gaze" in classes:
            self._figure = {"box": [int(v) for v in attrs["data-box"].split(",")], "images": []}
            self.episodes[-1]["gazes"].append(self._figure)
        elif tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")  # inlined: the page stands alone
            picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))))
            if "crop" in classes:
                self.episodes[-1]["crops"].append(picture)
            if self._figure is not None:
                self._figure["images"].append((classes, picture))

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None


@pytest.fixture(scope="module")
def oracle_episodes():
    """Oracle episodes on small-world questions of every kind; every gaze question first crops a
    wrong emblem (two gazes), so episodes hold several gaze actions."""
    world = build_world(SMALL_WORLD)
    questions = world.questions["test"][:10]
    assert {q.kind for q in questions} == {"no_search", "glance", "gaze"}
    env_config = env_lib.EnvConfig(prompt="brief")
    policy = oracle_lib.Oracle(wrong_crop_share=1.0, gaze_config=env_config.gaze)
    return run_scripted(world, world_backend(world), policy, env_config, questions)


def test_html_report_has_a_box_per_gaze_action_and_every_crop(oracle_episodes, tmp_path):
    results, scores = oracle_episodes
    path = report.write_html(str(tmp_path / "report.html"), results, scores, report.summarize(results, scores, "w"))
    page = _Page()
    page.feed(open(path, encoding="utf-8").read())
    assert [e["qid"] for e in page.episodes] == [r.question.id for r in results]
    total_gazes = 0
    for shown, result in zip(page.episodes, results):
        boxes = [rec["box"] for rec in result.trace if rec["action"] == "gaze" and rec.get("box") is not None]
        crops = [image for turn in result.turns[2:] if turn.role == "user" for image in turn.images]
        total_gazes += len(boxes)
        assert [g["box"] for g in shown["gazes"]] == boxes  # one figure per gaze action, in turn order
        assert len(shown["crops"]) == len(crops)
        for got, want in zip(shown["crops"], crops):  # every crop the model saw, pixel for pixel
            np.testing.assert_array_equal(got, want)
        for gaze in shown["gazes"]:
            (drawn,) = [picture for classes, picture in gaze["images"] if "gaze-box" in classes]
            assert sum("crop" in classes for classes, _ in gaze["images"]) == 1
            x1, y1, x2, y2 = (2 * v for v in gaze["box"])  # 168-px scenes are drawn at 2x
            assert tuple(drawn[(y1 + y2) // 2, x1]) == (255, 140, 0)  # this gaze's box, and only it
            assert (np.all(drawn == (255, 140, 0), axis=-1).sum()
                    <= 2 * 2 * ((x2 - x1) + (y2 - y1)) + 200)  # one rectangle's outline (+ its number)
        assert shown["correct"] == (result.prediction in result.question.answers)
    assert total_gazes >= 4  # the questions include gaze questions, each with a wrong crop first
    text = open(path, encoding="utf-8").read()
    for result in results:
        assert f'<dd class="prediction">{result.prediction}</dd>' in text
        assert "&lt;information&gt;" in text  # observations (search results) are shown, escaped


def test_summary_breaks_accuracy_down_and_counts_skips():
    image = np.zeros((8, 8, 3), np.uint8)

    def result(qid, kind="", **meta):
        return EpisodeResult(env_lib.Question(qid, image, "q?", ("a",), kind), meta, [], [{"action": "answer"}],
                             "a", None)
    results = [result("a", level="level1"), result("b", level="level1"), result("c", level="level2"),
               result("d", kind="gaze")]
    scores = [{"accuracy": v, "reward": v, "format": 1.0} for v in (1.0, 0.0, 1.0, 1.0)]
    summary = report.summarize(results, scores, "livevqa", {"missing_image": 2, "corrupt_image": 1})
    bench = summary["per_benchmark"]["livevqa"]
    assert bench["n"] == 4 and bench["accuracy"] == 0.75
    assert bench["skipped"] == {"corrupt_image": 1, "missing_image": 2} and bench["skipped_total"] == 3
    assert bench["by"] == {"kind": {"gaze": {"accuracy": 1.0, "n": 1}},
                           "level": {"level1": {"accuracy": 0.5, "n": 2}, "level2": {"accuracy": 1.0, "n": 1}}}
    assert summary["per_level"]["gaze"] == {"accuracy": 1.0, "n": 1}
    assert summary["actions"]["answer"] == 4 and summary["actions"]["turns_mean"] == 1.0

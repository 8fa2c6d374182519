import dataclasses
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gog_jax.agent import protocol
from gog_jax.agent.env import EnvConfig, GoGEnv, Question
from gog_jax.agent.protocol import Answer, Gaze, Glance, Search


@dataclasses.dataclass(frozen=True)
class Result:
    title: str
    snippet: str
    source_id: str
    score: float = 1.0
    thumbnail: object = None


class SearchError(Exception):
    pass


class FakeBackend:
    """Records every call; raises on request (a given exception or an unexpected one)."""

    def __init__(self, fail_every: int = 0, hang_s: float = 0.0):
        self.calls: list[tuple[str, object]] = []
        self.fail_every, self.hang_s = fail_every, hang_s

    def _maybe_fail(self):
        n = len(self.calls)
        if self.fail_every and n % self.fail_every == 0:
            raise (SearchError("backend down") if n % 2 else ZeroDivisionError("bug in backend"))
        if self.hang_s:
            time.sleep(self.hang_s)

    def image_search(self, image, k):
        self.calls.append(("image", image))
        self._maybe_fail()
        return [Result(f"Entity {i}", f"image result {i}", f"img-{image.shape[0]}x{image.shape[1]}-{i}")
                for i in range(k)]

    def text_search(self, query, k):
        self.calls.append(("text", query))
        self._maybe_fail()
        return [Result(f"Doc {i}", f"about {query}", f"doc-{i}") for i in range(k)]


IMAGE = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
QUESTION = Question("q1", IMAGE, "Who founded the firm whose emblem is top left?", ("Ida Merren",), kind="gaze")


def _act(action, think="t"):
    return protocol.format_action(action, think=think)


def test_episode_glance_gaze_search_answer():
    backend = FakeBackend()
    env = GoGEnv(backend, EnvConfig(top_k=2))
    first = env.reset(QUESTION)
    assert first.image is IMAGE and QUESTION.question in first.text

    r = env.step(_act(Glance()))
    assert not r.done and r.info["action"] == "glance" and r.info["source_ids"] == ["img-300x400-0", "img-300x400-1"]
    assert r.observation.text == "<information>1. Entity 0: image result 0\n2. Entity 1: image result 1</information>"

    r = env.step(_act(Gaze((98, 77, 196, 154))))
    assert r.info["box"] == [100, 75, 200, 150] and r.info["box_model"] == [98, 77, 196, 154]
    crop = r.observation.image
    assert crop.shape == (75, 100, 3)
    np.testing.assert_array_equal(crop, IMAGE[75:150, 100:200])
    assert r.observation.turn.parts[0] == "<information>" and r.observation.turn.parts[1] is crop
    assert backend.calls[-1][1] is crop

    r = env.step(_act(Search("Kavor Lin founder")))
    assert r.info["source_ids"] == ["doc-0", "doc-1"] and backend.calls[-1] == ("text", "Kavor Lin founder")

    r = env.step(_act(Answer("Ida Merren")))
    assert r.done and r.observation is None and r.info["prediction"] == "Ida Merren"
    assert [t["action"] for t in r.info["trace"]] == ["glance", "gaze", "search", "answer"]
    assert r.info["truncated"] is None
    assert [t.role for t in env.turns] == ["system", "user"] + ["assistant", "user"] * 3 + ["assistant"]


def test_backend_never_sees_question_or_kind():
    backend = FakeBackend()
    env = GoGEnv(backend)
    env.reset(QUESTION)
    for action in (Glance(), Gaze((0, 0, 200, 200)), Search("emblem founder")):
        env.step(_act(action))
    for kind, arg in backend.calls:
        if kind == "text":
            assert QUESTION.question not in arg and QUESTION.kind not in arg.split()
        else:
            assert isinstance(arg, np.ndarray) and arg.dtype == np.uint8


def test_turn_budget_and_last_turn_note():
    env = GoGEnv(FakeBackend(), EnvConfig(max_turns=3))
    env.reset(QUESTION)
    r1 = env.step(_act(Glance()))
    r2 = env.step(_act(Glance()))
    assert not r1.done and protocol.LAST_TURN_NOTE not in r1.observation.text
    assert protocol.LAST_TURN_NOTE in r2.observation.text
    r3 = env.step(_act(Glance()))
    assert r3.done and r3.info["truncated"] == "turn_budget" and r3.info["prediction"] is None
    late = env.step(_act(Answer("x")))
    assert late.done and late.info["action"] == "invalid" and "over" in late.info["error"]


def test_token_budget():
    env = GoGEnv(FakeBackend(), EnvConfig(max_response_tokens=100))
    env.reset(QUESTION)
    assert not env.step(_act(Glance()), num_tokens=60).done
    r = env.step(_act(Glance()), num_tokens=60)
    assert r.done and r.info["truncated"] == "token_budget"
    env.reset(QUESTION)
    r = env.step(_act(Glance(), think="x" * 200))  # no count given: UTF-8 bytes bound it
    assert r.done and r.info["truncated"] == "token_budget"


def test_bad_actions_and_boxes_become_observations():
    backend = FakeBackend()
    env = GoGEnv(backend, EnvConfig(max_turns=20))
    env.reset(QUESTION)
    cases = {
        "<glance/>": "Start the turn",
        "<think>t</think><gaze>[200, 10, 100, 50]</gaze>": "inverted",
        "<think>t</think><gaze>[10, 10, 10, 50]</gaze>": "zero area",
        "<think>t</think><gaze>[900, 900, 999, 999]</gaze>": "outside the image",
        "<think>t</think><gaze>[0, 100, 392, 101]</gaze>": "too thin",
        "<think>t</think><gaze>[a, b, c, d]</gaze>": "4 numbers",
        "<think>t</think><gaze>[1, 2, 3]</gaze>": "4 numbers",
    }
    for text, fragment in cases.items():
        r = env.step(text)
        assert not r.done and fragment in r.observation.text and fragment in r.info["error"]
        assert r.info["action"] in ("invalid", "gaze")
    assert backend.calls == []
    r = env.step("<think>t</think><gaze>[-1e9, -1e9, 1e9, 1e9]</gaze>")  # enormous: repaired to the image
    assert r.info["box"] == [0, 0, 400, 300] and r.info["error"] is None


def test_tool_failures_and_timeouts():
    env = GoGEnv(FakeBackend(fail_every=1), EnvConfig(max_turns=20))
    env.reset(QUESTION)
    r1, r2 = env.step(_act(Glance())), env.step(_act(Search("x")))
    errors = {r1.info["error"].split(":")[0], r2.info["error"].split(":")[0]}
    assert errors == {"SearchError", "ZeroDivisionError"}
    assert "Search failed" in r1.observation.text and r1.info["source_ids"] == []

    env = GoGEnv(FakeBackend(hang_s=1.0), EnvConfig(search_timeout_s=0.05))
    env.reset(QUESTION)
    start = time.perf_counter()
    r = env.step(_act(Glance()))
    assert time.perf_counter() - start < 0.5
    assert r.info["error"].startswith("SearchTimeout") and "Search failed" in r.observation.text


def test_fault_injection_is_seeded_and_traced():
    def run(seed):
        env = GoGEnv(FakeBackend(), EnvConfig(fault_rate=0.3, seed=seed, max_turns=50))
        env.reset(QUESTION)
        return [env.step(_act(Glance())).info for _ in range(40)]

    infos = run(7)
    faults = [i["fault"] for i in infos]
    assert faults == [i["fault"] for i in run(7)]
    assert 4 <= sum(faults) <= 22
    for info in infos:
        assert (info["error"] == "injected fault") == info["fault"]
        assert (info["source_ids"] == []) == info["fault"]


ASSISTANT_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(list(protocol.DEFAULT_GRAMMAR.tags) + [
        "[", "]", ", ", "0", "-7", "391", "1e308", "9" * 30, "nan", "x", " ", "\n", "<|im_end|>"]),
        max_size=25).map("".join),
    st.tuples(st.floats(allow_nan=True), st.floats(), st.floats(), st.floats()).map(
        lambda b: "<think>t</think><gaze>[" + ", ".join(repr(v) for v in b) + "]</gaze>"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(ASSISTANT_TEXT, min_size=1, max_size=7), st.integers(0, 3))
def test_step_never_raises(texts, fail_every):
    env = GoGEnv(FakeBackend(fail_every=fail_every), EnvConfig(fault_rate=0.2, seed=1, search_timeout_s=None))
    env.reset(QUESTION)
    for text in texts:
        r = env.step(text)
        assert set(r.info) >= {"action", "error"}
        assert r.done or r.observation.text.startswith("<information>")
        if r.info.get("box") is not None:
            x1, y1, x2, y2 = r.info["box"]
            assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 300
    assert len(env.trace) <= 5


def test_thousand_episodes_with_five_percent_faults():
    """A scripted glance -> gaze -> search -> answer policy; every injected fault is in the trace."""
    backend = FakeBackend()
    env = GoGEnv(backend, EnvConfig(fault_rate=0.05, seed=3))
    script = [_act(Glance()), _act(Gaze((98, 77, 196, 154))), _act(Search("founder")), _act(Answer("Ida Merren"))]
    faults = searches = 0
    for _ in range(1000):
        env.reset(QUESTION)
        for text in script:
            result = env.step(text)
        assert result.done and result.info["prediction"] == "Ida Merren"
        trace = result.info["trace"]
        searches += 3
        faults += sum(step["fault"] for step in trace)
        assert all(step["error"] == "injected fault" for step in trace if step["fault"])
    assert len(backend.calls) == searches - faults
    assert 0.035 < faults / searches < 0.065

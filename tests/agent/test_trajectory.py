import json

import numpy as np

from gog_jax.agent import gaze, protocol, render, trajectory
from gog_jax.agent.env import EnvConfig, GoGEnv, Question
from gog_jax.agent.protocol import Answer, Gaze, Glance

VISION = render.VisionSpec(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
QUESTION = Question("q1", np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8),
                    "Who founded it?", ("Ida Merren",), kind="gaze")


class Result:
    def __init__(self, i):
        self.title, self.snippet, self.source_id = f"Entity {i}", f"snippet {i}", f"id-{i}"


class FakeBackend:
    def image_search(self, image, k):
        return [Result(i) for i in range(k)]

    def text_search(self, query, k):
        return [Result(i) for i in range(k)]


def test_record_round_trip_re_cuts_crops(tiny_tokenizer, tmp_path):
    config = EnvConfig(gaze=gaze.GazeConfig(margin=0.1, buckets=((56, 56), (56, 112), (112, 56))), max_turns=6)
    env = GoGEnv(FakeBackend(), config)
    env.reset(QUESTION)
    for action in (Glance(), Gaze((10, 10, 60, 40)), Gaze((200, 100, 300, 250)), Answer("Ida Merren")):
        env.step(protocol.format_action(action, think="why"))

    record = json.loads(json.dumps(trajectory.env_record(env, "scene.png", {"split": "train"})))
    assert record["id"] == "q1" and record["images"] == ["scene.png"]
    assert record["meta"] == {"kind": "gaze", "answer": ["Ida Merren"], "split": "train"}
    images = [c for m in record["messages"] for c in m["content"] if c["type"] == "image"]
    assert [i["box"] for i in images] == [None, env.trace[1]["box"], env.trace[2]["box"]]

    turns = trajectory.from_record(record, lambda path: QUESTION.image, config.gaze)
    assert [t.role for t in turns] == [t.role for t in env.turns]
    for a, b in zip(turns, env.turns):
        assert len(a.parts) == len(b.parts)
        for pa, pb in zip(a.parts, b.parts):
            if isinstance(pa, str):
                assert pa == pb
            else:
                np.testing.assert_array_equal(pa, pb)
    ours = np.concatenate([c.token_ids for c in render.render(turns, tiny_tokenizer, VISION)])
    theirs = np.concatenate([c.token_ids for c in render.render(env.turns, tiny_tokenizer, VISION)])
    np.testing.assert_array_equal(ours, theirs)

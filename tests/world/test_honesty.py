"""The world is honest: what a search returns depends only on what was searched with."""

import numpy as np

from gog_jax.agent import env as env_lib
from gog_jax.agent import gaze as gaze_lib
from gog_jax.eval.episodes import run_episode
from gog_jax.world import oracle as oracle_lib
from gog_jax.world.index import world_backend
from gog_jax.world.kb import VISUAL_WORDS
from gog_jax.world.questions import KINDS
from gog_jax.world.world import SPLITS


class RecordingBackend:
    """Forwards to the real backend and keeps every argument it was given."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def image_search(self, image, k):
        self.calls.append(("image", np.array(image), k))
        return self.backend.image_search(image, k)

    def text_search(self, query, k):
        self.calls.append(("text", query, k))
        return self.backend.text_search(query, k)


def test_backend_never_receives_the_question_or_its_kind(small_world, small_backend):
    questions = [q for split in SPLITS for q in small_world.questions[split]]
    recorder = RecordingBackend(small_backend)
    env = env_lib.GoGEnv(recorder, env_lib.EnvConfig())
    policies = [oracle_lib.Oracle(wrong_crop_share=0.5),
                oracle_lib.GlanceOnlyOracle([e.name for e in small_world.entities])]
    for policy in policies:
        for q in questions:
            start = len(recorder.calls)
            image = small_world.image(q)
            run_episode(env, policy, oracle_lib.env_question(small_world, q), oracle_lib.question_meta(small_world, q))
            for kind, arg, _ in recorder.calls[start:]:
                if kind == "text":
                    assert arg in {e.name for e in small_world.entities}  # only names the results showed
                    assert q.question not in arg and not any(k in arg for k in KINDS)
                else:
                    # The whole image or a crop of it: pixels only, nothing that names the kind.
                    assert arg.dtype == np.uint8 and arg.ndim == 3
                    assert arg.shape == image.shape or arg.shape[0] <= image.shape[0]
    assert {c[0] for c in recorder.calls} == {"image", "text"}


def test_same_pixels_same_results_whatever_the_question(default_world, default_backend):
    # A search is a function of its input alone: the gaze scene searched outside any episode
    # returns what the glance-only policy saw inside one.
    recorder = RecordingBackend(default_backend)
    env = env_lib.GoGEnv(recorder, env_lib.EnvConfig())
    policy = oracle_lib.GlanceOnlyOracle([e.name for e in default_world.entities])
    q = next(q for q in default_world.questions["test"] if q.kind == "gaze")
    result = run_episode(env, policy, oracle_lib.env_question(default_world, q), oracle_lib.question_meta(default_world, q))
    direct = default_backend.image_search(default_world.image(q), 3)
    assert result.trace[0]["source_ids"] == [r.source_id for r in direct]


def test_glance_on_a_cluttered_scene_misses_but_a_crop_finds(default_world, default_backend):
    gaze = [q for q in default_world.questions["test"] if q.kind == "gaze"]
    whole_hits = crop_hits = 0
    for q in gaze:
        image = default_world.image(q)
        whole = [default_world.entity_of(r.source_id) for r in default_backend.image_search(image, 3)]
        whole_hits += whole[0] == q.target
        crop = gaze_lib.crop(image, q.target_box, gaze_lib.GazeConfig())
        crop_hits += default_world.entity_of(default_backend.image_search(crop, 1)[0].source_id) == q.target
    assert whole_hits / len(gaze) <= 0.2
    assert crop_hits == len(gaze)
    glance = [q for q in default_world.questions["test"] if q.kind == "glance"]
    glance_hits = sum(default_world.entity_of(default_backend.image_search(default_world.image(q), 1)[0].source_id)
                      == q.target for q in glance)
    assert glance_hits / len(glance) >= 0.97


def test_text_search_for_an_emblems_look_does_not_find_its_entity(default_world, default_backend):
    found = 0
    for entity in default_world.entities:
        e = entity.emblem
        for query in (e.describe(), f"{e.colour} {e.shape} emblem", f"{e.colour} {e.shape} {e.pattern} logo"):
            results = default_backend.text_search(query, 5)
            found += any(default_world.entity_of(r.source_id) == entity.entity_id for r in results)
    assert found == 0
    assert VISUAL_WORDS >= {"red", "hexagon", "striped", "emblem"}


def test_jittered_boxes_retrieve_the_same_entity(default_world, default_backend):
    rng = np.random.default_rng(0)
    config = gaze_lib.GazeConfig()
    hits = total = 0
    for q in default_world.questions["test"]:
        if q.kind != "gaze":
            continue
        image = default_world.image(q)
        x1, y1, x2, y2 = q.target_box
        w, h = x2 - x1, y2 - y1
        for _ in range(5):
            jitter = rng.uniform(-0.15, 0.15, 4) * np.array([w, h, w, h])
            box = gaze_lib.resolve_box(np.array(q.target_box) + jitter, image.shape[:2], config)
            top = default_backend.image_search(gaze_lib.crop(image, box, config), 1)[0]
            hits += default_world.entity_of(top.source_id) == q.target
            total += 1
    assert total == 1000
    assert hits / total >= 0.95, hits / total


def test_text_search_on_a_name_ranks_its_facts_first(default_world, default_backend):
    for entity in default_world.entities:
        top = default_backend.text_search(entity.name, 1)[0]
        assert top.source_id == entity.entity_id and str(entity.founded) in top.snippet


def test_cached_index_answers_like_a_fresh_one(small_world, small_backend, tmp_path):
    first = world_backend(small_world, cache_dir=str(tmp_path))
    again = world_backend(small_world, cache_dir=str(tmp_path))
    for q in small_world.questions["test"][:8]:
        image = small_world.image(q)
        expected = [r.source_id for r in small_backend.image_search(image, 3)]
        assert [r.source_id for r in first.image_search(image, 3)] == expected
        assert [r.source_id for r in again.image_search(image, 3)] == expected

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gog_jax.world import kb
from gog_jax.world.questions import KINDS
from gog_jax.world.scenes import spec_from_json, spec_to_json
from gog_jax.world.world import SMALL_WORLD, WorldConfig, build_world


def test_world_is_deterministic_from_its_seed(small_world):
    again = build_world(SMALL_WORLD)
    for split, questions in small_world.questions.items():
        assert [q for q in questions] == again.questions[split]
    for q in small_world.questions["test"][:5]:
        np.testing.assert_array_equal(small_world.image(q), again.image(q))
    other = build_world(SMALL_WORLD.replace(seed=1))
    assert [q.question for q in other.questions["test"]] != [q.question for q in small_world.questions["test"]] or \
        [q.answers for q in other.questions["test"]] != [q.answers for q in small_world.questions["test"]]


def test_default_world_sizes_and_kinds(default_world):
    sizes = {split: len(qs) for split, qs in default_world.questions.items()}
    assert sizes == dict(WorldConfig().split_sizes)
    for questions in default_world.questions.values():
        counts = {k: sum(q.kind == k for q in questions) for k in KINDS}
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert default_world.build_seconds < 10.0


def test_images_have_the_designed_size(small_world):
    for q in small_world.questions["test"]:
        image = small_world.image(q)
        assert image.shape == (168, 168, 3) and image.dtype == np.uint8


def test_gaze_scenes_hold_six_or_more_emblems_and_a_unique_cue(default_world):
    for q in default_world.questions["test"]:
        if q.kind != "gaze":
            continue
        placements = q.scene.placements
        assert len(placements) >= 6
        target = next(p for p in placements if p.entity_id == q.target)
        x1, y1, x2, y2 = q.target_box
        assert x1 <= target.box[0] and y1 <= target.box[1] and target.box[2] <= x2 and target.box[3] <= y2
        if q.cue == "colour":
            assert sum(p.emblem.colour == target.emblem.colour for p in placements) == 1
            assert target.emblem.colour in q.question
        if q.cue == "shape":
            assert sum(p.emblem.shape == target.emblem.shape for p in placements) == 1
        # The question never names the entity.
        assert default_world.entity_by_id[q.target].name not in q.question


def test_held_out_entities_are_never_asked_about_in_train(default_world):
    asked = {split: {q.target for q in qs if q.target} for split, qs in default_world.questions.items()}
    assert not asked["train"] & asked["test"]
    assert not asked["train"] & asked["validation"]
    assert asked["test"] <= set(default_world.target_pools["test"])


def test_knowledge_base_never_describes_emblems(default_world):
    texts = [r.title + " " + r.text for r in default_world.records()]
    for text in texts:
        words = {w.strip(".,:;").lower() for w in text.replace("-", " ").split()}
        assert not words & kb.VISUAL_WORDS, (text, words & kb.VISUAL_WORDS)


def test_entities_have_distinct_emblems_and_names(default_world):
    entities = default_world.entities
    assert len({e.emblem for e in entities}) == len(entities)
    assert len({e.name for e in entities}) == len(entities)
    # Shape-colour pairs are spread before any is reused.
    pairs = {(e.emblem.shape, e.emblem.colour) for e in entities}
    assert len(pairs) == min(64, len(entities))


def test_scene_spec_json_round_trip(small_world):
    for q in small_world.questions["test"]:
        assert spec_from_json(json.loads(json.dumps(spec_to_json(q.scene)))) == q.scene


def test_train_scenes_never_show_held_out_emblems(default_world):
    held_out = set(default_world.target_pools["test"]) | set(default_world.target_pools["validation"])
    for q in default_world.questions["train"]:
        assert not {p.entity_id for p in q.scene.placements} & held_out


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_entities=st.integers(24, 120))
def test_any_seed_builds_a_valid_world(seed, n_entities):
    world = build_world(WorldConfig(seed=seed, n_entities=n_entities, n_galleries=4,
                                    split_sizes=(("train", 30), ("validation", 12), ("test", 12))))
    for questions in world.questions.values():
        for q in questions:
            assert q.answers and all(q.answers)
            if q.kind == "gaze":
                assert len(q.scene.placements) >= 6 and q.target in world.entity_by_id
            if q.kind == "glance":
                assert len(q.scene.placements) == 1 and q.scene.placements[0].entity_id == q.target

"""Questions of three kinds, each with its scene, ground truth and the box an ideal gaze crops.

- `no_search`: the answer is in the pixels (the emblem's colour or shape, or how many emblems
  a grid holds).
- `glance`: one dominant emblem; a whole-image search finds its entity; the question asks the
  entity's name or a fact (then a text search on the name gives it).
- `gaze`: 6-9 emblems on a 3x3 grid; the question points at one emblem by its position or by a
  visual cue unique in the scene (never by name); only a crop of it finds its entity.
"""

import dataclasses
import itertools

import numpy as np

from gog_jax.world.emblems import SHAPE_WORDS
from gog_jax.world.kb import FACTS, Entity
from gog_jax.world.scenes import GRID, SceneSpec, cell_box, grid_layout, position_phrase, single_layout

KINDS = ("no_search", "glance", "gaze")

# "{ref}" is a noun phrase naming the organisation through its emblem.
_FACT_TEMPLATES = {
    "name": "Which organisation does {ref} belong to?",
    "founded": "In what year was the organisation with {ref} founded?",
    "city": "In which city is the organisation with {ref} based?",
    "founder": "Who founded the organisation with {ref}?",
}
_COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclasses.dataclass(frozen=True)
class Question:
    qid: str
    split: str
    kind: str  # one of KINDS
    question: str
    answers: tuple[str, ...]  # canonical answer first, then accepted aliases
    attribute: str  # "colour" | "shape" | "count" | "name" | one of FACTS
    scene: SceneSpec
    target: str | None = None  # entity_id the question is about (None for no_search)
    target_box: tuple[int, int, int, int] | None = None  # scene pixels: the ideal gaze crop
    cue: str | None = None  # gaze only: "position" | "colour" | "shape"

    @property
    def answer(self) -> str:
        return self.answers[0]


def _attribute(rng: np.random.Generator, name_share: float) -> str:
    return "name" if rng.random() < name_share else FACTS[rng.integers(len(FACTS))]


def no_search_question(rng: np.random.Generator, qid: str, split: str, entities: list[Entity],
                       size: int) -> Question:
    """Colour or shape of a single emblem, or the number of emblems in a grid."""
    roll = rng.random()
    if roll < 0.8:
        entity = entities[rng.integers(len(entities))]
        scene = single_layout(rng, entity.entity_id, entity.emblem, size)
        if roll < 0.4:
            return Question(qid, split, "no_search", "What colour is the emblem?", (entity.emblem.colour,),
                            "colour", scene)
        return Question(qid, split, "no_search", "What shape is the emblem?", (entity.emblem.shape,),
                        "shape", scene)
    n = int(rng.integers(3, GRID * GRID + 1))
    chosen = rng.choice(len(entities), n, replace=False)
    cells = _cells(rng, n)
    scene = grid_layout(rng, [(entities[i].entity_id, entities[i].emblem) for i in chosen], cells, size)
    return Question(qid, split, "no_search", "How many emblems are in the image?", (str(n), _COUNT_WORDS[n]),
                    "count", scene)


def glance_question(rng: np.random.Generator, qid: str, split: str, targets: list[Entity], size: int,
                    name_share: float) -> Question:
    entity = targets[rng.integers(len(targets))]
    scene = single_layout(rng, entity.entity_id, entity.emblem, size)
    attribute = _attribute(rng, name_share)
    text = _FACT_TEMPLATES[attribute].format(ref="this emblem")
    return Question(qid, split, "glance", text, (entity.fact(attribute),), attribute, scene,
                    target=entity.entity_id, target_box=scene.placements[0].box)


def _cells(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    all_cells = list(itertools.product(range(GRID), range(GRID)))
    return [all_cells[i] for i in rng.choice(len(all_cells), n, replace=False)]


def gaze_question(rng: np.random.Generator, qid: str, split: str, targets: list[Entity],
                  others: list[Entity], size: int, name_share: float, min_emblems: int,
                  cue_shares: dict[str, float]) -> Question:
    """A grid of `min_emblems`..9 emblems; the target is named by position or a unique cue."""
    target = targets[rng.integers(len(targets))]
    n = int(rng.integers(min_emblems, GRID * GRID + 1))
    cues = list(cue_shares)
    cue = cues[rng.choice(len(cues), p=np.asarray([cue_shares[c] for c in cues]) / sum(cue_shares.values()))]
    pool = [e for e in others if e.entity_id != target.entity_id]
    if cue == "colour":
        pool = [e for e in pool if e.emblem.colour != target.emblem.colour]
    elif cue == "shape":
        pool = [e for e in pool if e.emblem.shape != target.emblem.shape]
    chosen = [pool[i] for i in rng.choice(len(pool), n - 1, replace=False)]
    items = [target] + chosen
    cells = _cells(rng, n)
    scene = grid_layout(rng, [(e.entity_id, e.emblem) for e in items], cells, size)
    if cue == "position":
        ref = f"the {position_phrase(cells[0])} emblem"
    elif cue == "colour":
        ref = f"the {target.emblem.colour} emblem"
    else:
        ref = f"the {SHAPE_WORDS[target.emblem.shape]} emblem"
    attribute = _attribute(rng, name_share)
    text = _FACT_TEMPLATES[attribute].format(ref=ref)
    return Question(qid, split, "gaze", text, (target.fact(attribute),), attribute, scene,
                    target=target.entity_id, target_box=cell_box(cells[0], size), cue=cue)

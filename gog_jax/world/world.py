"""The synthetic search world: entities, galleries, questions per split, and the records to index.

`build_world(config)` is a pure function of the config (seed included): same config, same
world, byte for byte. Scenes are kept as specs and rendered on demand (`World.image`).
"""

import dataclasses
import time

import numpy as np

from gog_jax.world.emblems import render_emblem
from gog_jax.world.kb import Entity, Gallery, entity_page, make_entities, make_galleries
from gog_jax.world.questions import KINDS, Question, gaze_question, glance_question, no_search_question
from gog_jax.world.scenes import GRID, grid_layout, render_scene

SPLITS = ("train", "validation", "test")
HOME_PAGE_TEXT = "Official home page."
_HOME_SUFFIX = ".home"


def home_page_id(entity_id: str) -> str:
    return entity_id + _HOME_SUFFIX


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world.

    heldout_entities: validation/test questions ask about entities no train question asks
      about, so a model cannot answer from memorised emblems or facts: it has to search.
    reference_size: side of the emblem images in the index (a gaze crop is about this size).
    """

    seed: int = 0
    n_entities: int = 96
    n_galleries: int = 48
    image_size: int = 168
    reference_size: int = 56
    split_sizes: tuple[tuple[str, int], ...] = (("train", 4800), ("validation", 300), ("test", 600))
    kind_shares: tuple[tuple[str, float], ...] = (("no_search", 1 / 3), ("glance", 1 / 3), ("gaze", 1 / 3))
    name_share: float = 0.25  # share of glance/gaze questions asking the name (no text search)
    min_gaze_emblems: int = 6
    cue_shares: tuple[tuple[str, float], ...] = (("position", 0.6), ("colour", 0.2), ("shape", 0.2))
    heldout_entities: bool = True
    heldout_fraction: float = 0.15  # of the entities, for each of validation and test

    def replace(self, **kwargs) -> "WorldConfig":
        return dataclasses.replace(self, **kwargs)

    @classmethod
    def from_flat(cls, values) -> "WorldConfig":
        """From a flat mapping (a ConfigDict): fields by name, split sizes as `<split>_size`."""
        values = dict(values)
        sizes = dict(cls.split_sizes)
        for split in SPLITS:
            sizes[split] = int(values.pop(f"{split}_size", sizes[split]))
        return cls(split_sizes=tuple(sizes.items()), **values)


# A few-second world for tests and smoke runs.
SMALL_WORLD = WorldConfig(n_entities=40, n_galleries=12,
                          split_sizes=(("train", 48), ("validation", 24), ("test", 24)))
PRESETS = {"default": WorldConfig(), "small": SMALL_WORLD}


def flat_config(config: WorldConfig) -> dict:
    """The fields a flat config (ConfigDict) carries for `WorldConfig.from_flat`."""
    out = {k: getattr(config, k) for k in ("seed", "n_entities", "n_galleries", "min_gaze_emblems",
                                          "heldout_entities")}
    out.update({f"{split}_size": size for split, size in config.split_sizes})
    return out


@dataclasses.dataclass(frozen=True)
class IndexRecord:
    """What the local index stores for one page (mirrors `gog_jax.search.Record`)."""
    source_id: str
    title: str
    text: str
    image: np.ndarray | None  # uint8 [h, w, 3]


@dataclasses.dataclass
class World:
    config: WorldConfig
    entities: list[Entity]
    galleries: list[Gallery]
    questions: dict[str, list[Question]]  # split -> questions
    target_pools: dict[str, list[str]]  # split -> entity ids its questions may ask about
    build_seconds: float = 0.0

    def __post_init__(self):
        self.entity_by_id = {e.entity_id: e for e in self.entities}

    def image(self, question: Question) -> np.ndarray:
        """The question's scene, uint8 [size, size, 3]."""
        return render_scene(question.scene)

    def gallery_image(self, gallery: Gallery) -> np.ndarray:
        rng = np.random.default_rng(gallery.seed)
        n = int(rng.integers(self.config.min_gaze_emblems, GRID * GRID + 1))
        chosen = rng.choice(len(self.entities), n, replace=False)
        cells = [(int(i) // GRID, int(i) % GRID) for i in rng.choice(GRID * GRID, n, replace=False)]
        items = [(self.entities[i].entity_id, self.entities[i].emblem) for i in chosen]
        return render_scene(grid_layout(rng, items, cells, self.config.image_size))

    def reference_image(self, entity: Entity) -> np.ndarray:
        return render_emblem(entity.emblem, self.config.reference_size)

    def records(self) -> list[IndexRecord]:
        """The index's pages.

        Per entity, a home page with its emblem but no facts (what an image search finds) and
        a KB page with the facts but no image (what a text search on its name finds); so a
        glance or a gaze names the entity, and its facts take a text search. Per gallery, a
        photo page.
        """
        records = [IndexRecord(home_page_id(e.entity_id), e.name, HOME_PAGE_TEXT, self.reference_image(e))
                   for e in self.entities]
        records += [IndexRecord(e.entity_id, e.name, entity_page(e), None) for e in self.entities]
        records += [IndexRecord(g.source_id, g.title, g.text, self.gallery_image(g)) for g in self.galleries]
        return records

    def entity_of(self, source_id: str) -> str | None:
        """The entity a search result is about (its home page or KB page), else None."""
        entity_id = source_id.removesuffix(_HOME_SUFFIX)
        return entity_id if entity_id in self.entity_by_id else None


def _kind_counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Exact per-kind counts summing to `total` (largest remainder)."""
    norm = sum(shares.values())
    raw = {k: total * shares.get(k, 0.0) / norm for k in KINDS}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    for k in sorted(KINDS, key=lambda k: counts[k] - raw[k])[:total - sum(counts.values())]:
        counts[k] += 1
    return counts


def build_world(config: WorldConfig = WorldConfig()) -> World:
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    entities = make_entities(rng, config.n_entities)
    galleries = make_galleries(rng, config.n_galleries)
    order = [entities[i] for i in rng.permutation(len(entities))]
    if config.heldout_entities:
        n_held = max(1, int(round(config.heldout_fraction * len(entities))))
        pools = {"validation": order[:n_held], "test": order[n_held:2 * n_held], "train": order[2 * n_held:]}
    else:
        pools = {split: order for split in SPLITS}
    # Emblems a split's scenes may show: never those held out for another split, so no train
    # trajectory pairs a validation/test emblem with its name (a wrong crop would).
    visible = {split: pools[split] if split == "train" or not config.heldout_entities
               else pools["train"] + pools[split] for split in SPLITS}
    cue_shares = dict(config.cue_shares)
    questions: dict[str, list[Question]] = {}
    for split, size in config.split_sizes:
        split_rng = np.random.default_rng([config.seed, SPLITS.index(split)])
        counts = _kind_counts(size, dict(config.kind_shares))
        kinds = [k for k in KINDS for _ in range(counts[k])]
        kinds = [kinds[i] for i in split_rng.permutation(len(kinds))]
        out = []
        for i, kind in enumerate(kinds):
            qid = f"{split}-{i:05d}"
            if kind == "no_search":
                q = no_search_question(split_rng, qid, split, visible[split], config.image_size)
            elif kind == "glance":
                q = glance_question(split_rng, qid, split, pools[split], config.image_size, config.name_share)
            else:
                q = gaze_question(split_rng, qid, split, pools[split], visible[split], config.image_size,
                                  config.name_share, config.min_gaze_emblems, cue_shares)
            out.append(q)
        questions[split] = out
    return World(config, entities, galleries, questions, {s: [e.entity_id for e in p] for s, p in pools.items()},
                 build_seconds=time.perf_counter() - start)

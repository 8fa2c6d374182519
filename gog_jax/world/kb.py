"""The knowledge base: fictional entities, their facts, and the pages the local index serves.

Entity pages state facts (kind, home city, founding year, founder) and never the emblem's look:
no colour, shape or pattern word appears in any page (tested), so a text search for an emblem's
description cannot stand in for looking at it. Gallery pages are the web's cluttered photos:
their images are grids of assorted emblems and their text names no entity, so a whole-image
search of a cluttered scene lands on them by image similarity alone.
"""

import dataclasses
import re

import numpy as np

from gog_jax.world.emblems import COLOURS, PATTERN_WORDS, PATTERNS, SHAPE_WORDS, SHAPES, Emblem

ENTITY_KINDS = ("rowing club", "guild", "choir", "observatory", "brewery", "academy", "theatre company",
                "orchestra", "museum", "chess club", "publishing house", "botanical society")
FACTS = ("founded", "city", "founder")  # attributes a text search on the entity's name reveals

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr",
           "kr", "st", "th", "tr", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou", "ia")
_CODAS = ("", "", "n", "r", "l", "s", "th", "nd", "rk", "m")

# Words that describe how emblems look; no KB text may contain them (whole words).
VISUAL_WORDS = frozenset(
    {"emblem", "emblems", "logo", "badge", "insignia", "crest", "colour", "color", "shape", "pattern",
     "striped", "stripes", "bars", "dot", "ring", "white"}
    | set(COLOURS) | set(SHAPES) | set(PATTERNS)
    | {w for words in SHAPE_WORDS.values() for w in re.split(r"[\s-]+", words)}
    | {w for words in PATTERN_WORDS.values() for w in re.split(r"[\s-]+", words)})


@dataclasses.dataclass(frozen=True)
class Entity:
    entity_id: str
    name: str
    kind: str
    city: str
    founded: int
    founder: str
    emblem: Emblem

    def fact(self, attribute: str) -> str:
        """The answer string for `attribute` in ('name',) + FACTS."""
        return {"name": self.name, "founded": str(self.founded), "city": self.city,
                "founder": self.founder}[attribute]


def _word(rng: np.random.Generator, syllables: tuple[int, int]) -> str:
    n = int(rng.integers(syllables[0], syllables[1] + 1))
    parts = []
    for i in range(n):
        parts.append(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))])
        if i == n - 1:
            parts.append(_CODAS[rng.integers(len(_CODAS))])
    return "".join(parts).capitalize()


def _unique_words(rng: np.random.Generator, count: int, syllables: tuple[int, int],
                  taken: set[str]) -> list[str]:
    words = []
    while len(words) < count:
        word = _word(rng, syllables)
        if word.lower() not in taken and word.lower() not in VISUAL_WORDS and len(word) >= 4:
            taken.add(word.lower())
            words.append(word)
    return words


def choose_emblems(rng: np.random.Generator, count: int) -> list[Emblem]:
    """`count` distinct emblems, spreading over (shape, colour) pairs before reusing any pair.

    Two entities that share a shape and a colour differ only in pattern, the hardest case for
    near-duplicate search, so that happens only once all 64 pairs are in use.
    """
    pairs = [(s, c) for s in SHAPES for c in COLOURS]
    if count > len(pairs) * len(PATTERNS):
        raise ValueError(f"At most {len(pairs) * len(PATTERNS)} distinct emblems, asked for {count}.")
    emblems: list[Emblem] = []
    used: set[Emblem] = set()
    while len(emblems) < count:
        for i in rng.permutation(len(pairs))[:count - len(emblems)]:
            shape, colour = pairs[i]
            free = [p for p in PATTERNS if Emblem(shape, colour, p) not in used]
            emblem = Emblem(shape, colour, free[rng.integers(len(free))])
            used.add(emblem)
            emblems.append(emblem)
    return emblems


def make_entities(rng: np.random.Generator, count: int, n_cities: int = 24) -> list[Entity]:
    """`count` fictional entities with unique names; cities and founders are shared vocabulary."""
    taken: set[str] = set()
    cities = _unique_words(rng, n_cities, (2, 3), taken)
    roots = _unique_words(rng, count, (2, 3), taken)
    first = _unique_words(rng, max(8, count // 3), (2, 2), taken)
    last = _unique_words(rng, max(8, count // 2), (2, 3), taken)
    emblems = choose_emblems(rng, count)
    entities = []
    for i, (root, emblem) in enumerate(zip(roots, emblems)):
        kind = ENTITY_KINDS[rng.integers(len(ENTITY_KINDS))]
        name = f"{root} {kind.title()}"
        founder = f"{first[rng.integers(len(first))]} {last[rng.integers(len(last))]}"
        entities.append(Entity(
            entity_id=f"entity-{i:04d}", name=name, kind=kind, city=cities[rng.integers(len(cities))],
            founded=int(rng.integers(1801, 2021)), founder=founder, emblem=emblem))
    return entities


def entity_page(entity: Entity) -> str:
    """The entity's KB page: facts only, never its look; short, as tiny models read it whole."""
    # The name in the text too: a text search on it must rank this page above the home page.
    article = "an" if entity.kind[0] in "aeiou" else "a"
    return f"{entity.name} is {article} {entity.kind} in {entity.city}, founded in {entity.founded} by {entity.founder}."


@dataclasses.dataclass(frozen=True)
class Gallery:
    """A distractor page: a photo of many emblems (a grid scene) with text that names none."""
    source_id: str
    title: str
    text: str
    seed: int


_GALLERY_PLACES = ("a market stall", "a town hall corridor", "a school fair", "a station kiosk",
                   "a festival tent", "a library foyer", "a souvenir shop", "a community centre")


def make_galleries(rng: np.random.Generator, count: int) -> list[Gallery]:
    galleries = []
    for i in range(count):
        place = _GALLERY_PLACES[rng.integers(len(_GALLERY_PLACES))]
        galleries.append(Gallery(
            source_id=f"gallery-{i:04d}", title=f"Photo of a pin board at {place}",
            text="Assorted pins and stickers.",
            seed=int(rng.integers(2**31))))
    return galleries

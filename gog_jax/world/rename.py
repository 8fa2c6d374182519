"""Counterfactual renaming of demonstrations: every proper name and year replaced, consistently.

Validation and test questions ask about entities that no training question asks about, so the
skill they test is reading the search results: copying the name a glance returns into a text
query, then the fact from the page into the answer. Cloned from the world's own oracle
episodes, a small model learns a shortcut instead: the 70-odd training entities are few enough
to memorise emblem -> name -> fact, and the memorised answer is always right in training. On a
held-out entity it then writes the nearest training entity's name and never looks at the
results (measured: 0.375 sampled accuracy on training glance questions, 0.0 on held-out ones).

A renamed episode maps every name word (entity roots, founders, cities) to another of the
world's name words, drawn at random per episode, and every founding year to another year, the
same substitution in every turn. The episode stays a correct trajectory of a world in which the
emblem is the same and the names and facts differ, so the results are the only way to its
answer. Drawing from the world's own words (held-out entities' included) makes every name a
copy target in training, each one token (`corpus.name_texts`), without tying any held-out
emblem to its real name or facts.
"""

import re
import zlib
from typing import Any

import numpy as np

from gog_jax.world.world import World

_YEAR = r"1[89]\d\d|20[0-2]\d"  # the KB's founding years are 1801-2020


def name_words(world: World) -> list[str]:
    """Every proper-name word of the world's text: entity roots, founders' names, cities."""
    words = set()
    for e in world.entities:
        words.add(e.name[:len(e.name) - len(e.kind)].strip())
        words.update(e.founder.split())
        words.add(e.city)
    return sorted(words)


class Renamer:
    """`renamer(record, key)` -> the record with names and years replaced; a pure function of key."""

    def __init__(self, world: World, seed: int = 0):
        self.words = name_words(world)
        self.seed = seed
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.words)) + "|" + _YEAR + r")\b")

    def mapping(self, texts: list[str], key: str) -> dict[str, str]:
        """Other name words (and years) for the names (and years) in `texts`: an injection."""
        found = list(dict.fromkeys(m.group(0) for t in texts for m in self.pattern.finditer(t)))
        rng = np.random.default_rng(zlib.crc32(f"rename/{self.seed}/{key}".encode()))
        names = [w for w in found if not w.isdigit()]
        years = [w for w in found if w.isdigit()]
        out = {w: self.words[i] for w, i in zip(names, rng.choice(len(self.words), len(names), replace=False))}
        new_years = rng.choice(np.arange(1801, 2021), size=len(years), replace=False)
        out.update({y: str(int(n)) for y, n in zip(years, new_years)})
        return out

    def __call__(self, record: dict[str, Any], key: str) -> dict[str, Any]:
        meta = record["meta"]
        answers = {k: list(meta[k]) for k in ("answer", "answers") if k in meta}
        texts = [c["text"] for m in record["messages"] for c in m["content"] if c["type"] == "text"]
        texts += [a for v in answers.values() for a in v] + [meta.get("target_name") or ""]
        mapping = self.mapping(texts, key)
        sub = lambda text: self.pattern.sub(lambda m: mapping[m.group(0)], text)  # noqa: E731
        messages = [{**m, "content": [{**c, "text": sub(c["text"])} if c["type"] == "text" else c
                                      for c in m["content"]]} for m in record["messages"]]
        meta = {**meta, **{k: [sub(a) for a in v] for k, v in answers.items()}, "renamed": True}
        if meta.get("target_name"):
            meta["target_name"] = sub(meta["target_name"])
        return {**record, "messages": messages, "meta": meta}

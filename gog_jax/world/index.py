"""The world's search backend: a `gog_jax.search.LocalIndex` over its pages and emblems.

The image embedder is the search package's default (`GlyphEmbedder`), unless one is passed.
Measured on the default world's test split: a glance at a single-emblem scene finds its entity
98.5% of the time, a glance at a gaze scene never (galleries of other emblems come first), and
a gaze box jittered by ±15% finds it 99.5% of the time.
"""

import json
import os

from gog_jax.search.embedders import Embedder
from gog_jax.search.local_index import LocalIndex, build_index
from gog_jax.world.world import World

SNIPPET_CHARS = 200


def world_backend(world: World, cache_dir: str | None = None, embedder: Embedder | None = None) -> LocalIndex:
    """The index over `world.records()`; with `cache_dir`, saved there once and loaded after.

    The cache is keyed by the world config, so a different world never reads a stale index
    (and `LocalIndex.load` re-embeds when the embedder differs from the saved one).
    """
    if cache_dir is None:
        return build_index(world.records(), embedder, SNIPPET_CHARS)
    key = repr(world.config)
    stamp = os.path.join(cache_dir, "world_config.json")
    if os.path.exists(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == key:
                return LocalIndex.load(cache_dir, embedder, SNIPPET_CHARS)
    index = build_index(world.records(), embedder, SNIPPET_CHARS)
    index.save(cache_dir)
    with open(stamp, "w", encoding="utf-8") as f:
        json.dump(key, f)
    return index

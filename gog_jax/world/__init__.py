"""The synthetic search world (the embedded default): emblems of fictional entities in scenes,
a knowledge base about them, questions of three kinds, oracle policies and a tfds builder.

    from gog_jax.world import WorldConfig, build_world
    from gog_jax.world.index import world_backend      # LocalIndex over the world's pages
    from gog_jax.world.oracle import Oracle, GlanceOnlyOracle, env_question, question_meta

    world = build_world(WorldConfig())                  # deterministic from config.seed
    q = world.questions["test"][0]; image = world.image(q)

Submodules with heavy imports (`index`: faiss/bm25s, `tfds_builder`: tensorflow-datasets,
`corpus`: the default tokenizer) are imported on demand.
"""

from gog_jax.world.questions import KINDS, Question
from gog_jax.world.world import PRESETS, SMALL_WORLD, SPLITS, World, WorldConfig, build_world

__all__ = ["KINDS", "PRESETS", "Question", "SMALL_WORLD", "SPLITS", "World", "WorldConfig", "build_world"]

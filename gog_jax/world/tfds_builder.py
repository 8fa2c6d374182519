"""The synthetic world as a tensorflow-datasets dataset, built offline into any `data_dir`.

    from gog_jax.world import tfds_builder  # registers "gog_world"
    tfds_builder.GogWorld(config="default", data_dir=DIR).download_and_prepare()
    ds = tfds.load("gog_world/default", data_dir=DIR, split="test")

Nothing is downloaded: examples are generated from the world config. Each example holds the
scene image, the question, gold answers and the ground truth (kind, target entity and box, and
the scene spec as JSON, so the oracle can act on examples read back from disk).
"""

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds

from gog_jax.world.oracle import question_meta
from gog_jax.world.questions import KINDS
from gog_jax.world.scenes import spec_to_json
from gog_jax.world.world import SMALL_WORLD, SPLITS, WorldConfig, build_world


@dataclasses.dataclass
class GogWorldConfig(tfds.core.BuilderConfig):
    world: WorldConfig = WorldConfig()


class GogWorld(tfds.core.GeneratorBasedBuilder):
    """Glance-or-Gaze synthetic search world: questions of kinds no_search / glance / gaze."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        GogWorldConfig(name="default", description="The embedded default world.", world=WorldConfig()),
        GogWorldConfig(name="small", description="A tiny world for tests.", world=SMALL_WORLD),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.world.image_size
        # A builder in a plain module (not a tfds dataset folder) must build its info by hand.
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
                "question": tfds.features.Text(),
                "answers": tfds.features.Sequence(tfds.features.Text()),
                "kind": tfds.features.ClassLabel(names=list(KINDS)),
                "attribute": tfds.features.Text(),
                "target": tfds.features.Text(),  # entity id, "" when the question has none
                "target_box": tfds.features.Tensor(shape=(4,), dtype=np.int32),  # [-1]*4 when none
                "meta": tfds.features.Text(),  # JSON: ground truth + scene spec
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # offline: nothing to download
        world = build_world(self.builder_config.world)
        return {split: self._generate_examples(world, split) for split in SPLITS if split in world.questions}

    def _generate_examples(self, world, split):
        for question in world.questions[split]:
            meta = question_meta(world, question)
            meta["scene"] = spec_to_json(question.scene)
            yield question.qid, {
                "id": question.qid,
                "image": world.image(question),
                "question": question.question,
                "answers": list(question.answers),
                "kind": question.kind,
                "attribute": question.attribute,
                "target": question.target or "",
                "target_box": np.asarray(question.target_box or (-1, -1, -1, -1), np.int32),
                "meta": json.dumps(meta, sort_keys=True),
            }

import json

import numpy as np
import tensorflow_datasets as tfds

from gog_jax.world import tfds_builder
from gog_jax.world.questions import KINDS


def test_builds_offline_and_loads_back(tmp_path, small_world):
    builder = tfds_builder.GogWorld(config="small", data_dir=str(tmp_path))
    builder.download_and_prepare()
    for split, questions in small_world.questions.items():
        ds = tfds.load("gog_world/small", data_dir=str(tmp_path), split=split, download=False)
        examples = {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}
        assert len(examples) == len(questions)
        for q in questions[:6]:
            ex = examples[q.qid]
            np.testing.assert_array_equal(ex["image"], small_world.image(q))
            assert ex["question"].decode() == q.question
            assert [a.decode() for a in ex["answers"]] == list(q.answers)
            assert KINDS[ex["kind"]] == q.kind
            meta = json.loads(ex["meta"])
            assert meta["target"] == q.target and meta["scene"]["layout"] == q.scene.layout
            assert tuple(ex["target_box"]) == (q.target_box or (-1, -1, -1, -1))

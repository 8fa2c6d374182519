"""The entry point dispatches on config.mode and the forward mode does real work."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from configs import forward
from gog_jax import main
from gog_jax.models import qwen2_5_vl


def test_forward_mode_round_trips_a_checkpoint(tmp_path):
    config = forward.get_config("preset=tiny")
    summary = main.run_mode(config, str(tmp_path))
    assert summary["mode"] == "forward" and "no training" in summary["note"]
    assert summary["image_tokens_per_sequence"] == 36  # 168x168 image: 12x12 patches, 2x2 merge
    reloaded = qwen2_5_vl.from_pretrained(os.path.join(str(tmp_path), "model"))
    assert summary["params"] == sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(reloaded)))


def test_unknown_mode_is_a_clear_error(tmp_path):
    config = forward.get_config()
    config.mode = "dance"
    with pytest.raises(ValueError, match="Unknown mode 'dance'"):
        main.run_mode(config, str(tmp_path))

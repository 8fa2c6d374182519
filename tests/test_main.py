"""The entry point dispatches on config.mode and the forward mode does real work."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from configs import forward
from gog_jax import main
from gog_jax.models import families


# 168x168 image, 2x2 merge: Qwen2.5-VL 12x12 patches of 14; Qwen3-VL resizes to 160x160, 10x10 patches of 16
@pytest.mark.parametrize("model,image_tokens", [("tiny", 36), ("qwen3_vl_tiny", 25)])
def test_forward_mode_round_trips_a_checkpoint(tmp_path, model, image_tokens):
    config = forward.get_config(f"model={model}")
    summary = main.run_mode(config, str(tmp_path))
    assert summary["mode"] == "forward" and "no training" in summary["note"]
    assert summary["image_tokens_per_sequence"] == image_tokens
    reloaded = families.from_pretrained(os.path.join(str(tmp_path), "model"))
    assert reloaded.config.MODEL_TYPE == config.model.family
    assert summary["params"] == sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(reloaded)))


def test_unknown_mode_is_a_clear_error(tmp_path):
    config = forward.get_config()
    config.mode = "dance"
    with pytest.raises(ValueError, match="Unknown mode 'dance'"):
        main.run_mode(config, str(tmp_path))

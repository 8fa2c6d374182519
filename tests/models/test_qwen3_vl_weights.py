"""Qwen3-VL checkpoint I/O: transformers <-> ours round trips, the released config layout, clear errors."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file
from transformers import Qwen3VLForConditionalGeneration

from gog_jax.models import qwen3_vl
from tests.models import hf_reference as ref

PATCH_DIM = 3 * 2 * 16 * 16


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hf"))
    ref.hf_model(ref.qwen3_config(), seed=7).save_pretrained(path)
    return path


def test_from_pretrained_matches_transformers(hf_dir):
    hf = Qwen3VLForConditionalGeneration.from_pretrained(hf_dir).eval()
    ours = qwen3_vl.from_pretrained(hf_dir, dtype="float32")
    inputs = ref.one_image_inputs(0, PATCH_DIM)
    np.testing.assert_allclose(ours(**inputs), ref.hf_logits(hf, **inputs), atol=1e-4, rtol=0)


def test_save_pretrained_round_trips_through_safetensors_and_transformers(hf_dir, tmp_path):
    ours = qwen3_vl.from_pretrained(hf_dir)
    qwen3_vl.save_pretrained(ours, str(tmp_path))
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(load_file(os.path.join(hf_dir,
                                                                                             "model.safetensors")))
    again = qwen3_vl.from_pretrained(str(tmp_path))
    assert again.config == ours.config
    for a, b in zip(jax.tree.leaves(nnx.state(ours, nnx.Param)), jax.tree.leaves(nnx.state(again, nnx.Param))):
        np.testing.assert_array_equal(a, b)
    hf = Qwen3VLForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    inputs = ref.one_image_inputs(1, PATCH_DIM)
    np.testing.assert_allclose(ref.hf_logits(hf, **inputs), ours(**inputs), atol=1e-4, rtol=0)


def test_released_config_layout_and_sharded_index(hf_dir, tmp_path):
    """`rope_scaling` + `rope_theta` in text_config (the released files), tensors in two shards."""
    ref.write_shards(load_file(os.path.join(hf_dir, "model.safetensors")), tmp_path)
    with open(os.path.join(hf_dir, "config.json")) as f:
        hf_config = json.load(f)
    rope = hf_config["text_config"].pop("rope_parameters")
    hf_config["text_config"]["rope_theta"] = rope.pop("rope_theta")
    hf_config["text_config"]["rope_scaling"] = rope
    with open(tmp_path / "config.json", "w") as f:
        json.dump(hf_config, f)
    a, b = qwen3_vl.from_pretrained(hf_dir), qwen3_vl.from_pretrained(str(tmp_path))
    assert a.config == b.config
    inputs = ref.one_image_inputs(2, PATCH_DIM)
    np.testing.assert_array_equal(a(**inputs), b(**inputs))


@pytest.mark.parametrize("name", qwen3_vl.PRESETS)
def test_presets_round_trip_through_config_json(name):
    cfg = qwen3_vl.model_config(qwen3_vl.get_preset(name))
    assert qwen3_vl.ModelConfig.from_hf(json.loads(json.dumps(cfg.to_hf()))) == cfg


def test_bad_checkpoints_are_named(hf_dir, tmp_path):
    def edit(t):
        t.pop("model.visual.deepstack_merger_list.1.norm.bias")
        t["model.language_model.layers.0.self_attn.q_norm.weight"] = np.zeros((17,), np.float32)
    with pytest.raises(ValueError, match=r"q_norm\.weight has shape \(17,\).*missing tensor for parameter "
                                         r"visual\.deepstack_merger_list\.1\.norm\.bias"):
        qwen3_vl.from_pretrained(ref.rewrite_checkpoint(hf_dir, tmp_path, edit))


def test_a_qwen2_5_vl_checkpoint_is_refused(tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(ref.hf_config().to_dict(), f)
    with pytest.raises(ValueError, match="Unsupported architecture.*qwen2_5_vl"):
        qwen3_vl.from_pretrained(str(tmp_path))


def test_a_config_without_sizes_is_refused():
    hf = qwen3_vl.model_config(qwen3_vl.get_preset("qwen3_vl_tiny")).to_hf()
    del hf["vision_config"]["depth"]
    with pytest.raises(ValueError, match=r"no \['depth'\] for the VisionConfig"):
        qwen3_vl.ModelConfig.from_hf(hf)

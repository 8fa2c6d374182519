"""Checkpoint I/O: transformers <-> ours round trips, sharded indexes, and clear errors."""

import json
import os

import numpy as np
import pytest
from transformers import Qwen2_5_VLForConditionalGeneration

from gog_jax import sharding
from gog_jax.models import qwen2_5_vl
from tests.models import hf_reference as ref


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hf"))
    ref.hf_model(ref.hf_config(), seed=7).save_pretrained(path)
    return path


def _ids_and_image(seed=0):
    inputs = ref.one_image_inputs(seed, 1176)
    return inputs["input_ids"], inputs["pixel_values"], inputs["image_grid_thw"]


def test_from_pretrained_matches_transformers(hf_dir):
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir).eval()
    ours = qwen2_5_vl.from_pretrained(hf_dir, dtype="float32")
    ids, pixels, grids = _ids_and_image()
    np.testing.assert_allclose(ours(ids, pixel_values=pixels, image_grid_thw=grids),
                               ref.hf_logits(hf, ids, pixel_values=pixels, image_grid_thw=grids), atol=1e-4)


def test_save_pretrained_round_trips_through_transformers(hf_dir, tmp_path):
    ours = qwen2_5_vl.from_pretrained(hf_dir)
    qwen2_5_vl.save_pretrained(ours, str(tmp_path))
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    ids, pixels, grids = _ids_and_image(1)
    np.testing.assert_allclose(ref.hf_logits(hf, ids, pixel_values=pixels, image_grid_thw=grids),
                               ours(ids, pixel_values=pixels, image_grid_thw=grids), atol=1e-4)


def test_module_key_layout_flat_config_and_sharded_index(hf_dir, tmp_path):
    """Keys as transformers 5 modules name them, the released flat config.json, several shards."""
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(hf_dir)
    legacy = {k: v.numpy() for k, v in hf.state_dict().items()}
    assert any(k.startswith("model.language_model.") for k in legacy)
    ref.write_shards(legacy, tmp_path)
    with open(os.path.join(hf_dir, "config.json")) as f:
        hf_config = json.load(f)
    text = hf_config.pop("text_config")
    text.pop("model_type")
    flat = {**text, **hf_config}  # the released flat layout
    rope = flat.pop("rope_parameters")
    flat["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    flat["rope_theta"] = rope["rope_theta"]
    with open(tmp_path / "config.json", "w") as f:
        json.dump(flat, f)
    a = qwen2_5_vl.from_pretrained(hf_dir)
    b = qwen2_5_vl.from_pretrained(str(tmp_path))
    ids, pixels, grids = _ids_and_image(2)
    np.testing.assert_array_equal(a(ids, pixel_values=pixels, image_grid_thw=grids),
                                  b(ids, pixel_values=pixels, image_grid_thw=grids))


def test_load_onto_a_mesh_places_each_tensor_with_its_sharding(hf_dir):
    import jax
    mesh = sharding.make_mesh((1, 1, len(jax.devices())))
    model = qwen2_5_vl.from_pretrained(hf_dir, mesh=mesh)
    kernel = model.model.layers[0].mlp.gate_proj.kernel[...]
    assert kernel.sharding.spec == sharding.spec_for(("embed", "mlp"), kernel.shape, mesh)


def test_missing_tensor_is_named(hf_dir, tmp_path):
    path = ref.rewrite_checkpoint(hf_dir, tmp_path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor for parameter model\.layers\.1\.mlp\.up_proj\.kernel"):
        qwen2_5_vl.from_pretrained(path)


def test_wrong_shape_is_named(hf_dir, tmp_path):
    def edit(t):
        t["visual.blocks.0.attn.qkv.weight"] = np.zeros((96, 31), np.float32)
    with pytest.raises(ValueError, match=r"visual\.blocks\.0\.attn\.qkv\.weight has shape \(96, 31\)"):
        qwen2_5_vl.from_pretrained(ref.rewrite_checkpoint(hf_dir, tmp_path, edit))


def test_unsupported_architecture(tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, f)
    with pytest.raises(ValueError, match="Unsupported architecture.*llama"):
        qwen2_5_vl.from_pretrained(str(tmp_path))


def test_bad_image_inputs_fail_before_compiling(hf_dir):
    model = qwen2_5_vl.from_pretrained(hf_dir)
    ids, pixels, grids = _ids_and_image(3)
    with pytest.raises(ValueError, match="describes 48 patches but pixel_values has 24"):
        model(ids, pixel_values=pixels, image_grid_thw=np.array([[1, 4, 12]]))
    with pytest.raises(ValueError, match="describes 6 image tokens .* hold 5 image-pad tokens"):
        model(ids[:, 1:] if ids[0, 0] == ref.IMAGE_TOKEN else np.delete(ids, np.argmax(ids[0] == ref.IMAGE_TOKEN), 1),
              pixel_values=pixels, image_grid_thw=grids)
    with pytest.raises(ValueError, match="pixel_values is None"):
        model(ids)

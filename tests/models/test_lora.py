"""LoRA: a fresh adapter is the identity, merging is exact, gradients reach only the factors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gog_jax.models import families, lora
from gog_jax.models.qwen2_5_vl.model import VisionLanguageModel


def _model(preset: str = "tiny") -> VisionLanguageModel:
    family, shapes = families.preset(preset)
    return families.build(families.named(family).model_config(shapes))


def _inputs(cfg):
    """A few text tokens around one 4x4-patch image (4 image tokens after the 2x2 merge)."""
    ids = np.array([[300, 301, 417, cfg.vision_start_token_id] + [cfg.image_token_id] * 4
                    + [cfg.vision_end_token_id, 333, 570, 901]])
    pixels = np.random.default_rng(0).standard_normal((16, cfg.vision.patch_dim)).astype(np.float32)
    return dict(input_ids=ids, pixel_values=pixels, image_grid_thw=np.array([[1, 4, 4]]))


def _randomise_b(model, seed=1):
    for i, (_, layer) in enumerate(lora.linears(model)):
        if layer.lora_b is not None:
            b = layer.lora_b
            b.set_value(0.1 * jax.random.normal(jax.random.key(seed + i), b.shape, b.dtype))


def _flat_shapes(model):
    return {path: (v.shape, v.dtype) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_target_counts_on_the_tiny_preset():
    assert lora.apply_lora(_model(), rank=4, alpha=8, targets=lora.ALL_DECODER_LINEARS, rngs=nnx.Rngs(1)) == 4 * 7
    # + 2 vision blocks x (qkv, proj, gate, up, down) + merger fc1, fc2; never the LM head or patch embedding
    model = _model()
    assert lora.apply_lora(model, rank=4, alpha=8, targets=lora.ALL_LINEARS, rngs=nnx.Rngs(1)) == 28 + 10 + 2
    assert model.visual.patch_embed.lora_a is None
    assert lora.apply_lora(_model(), rank=4, alpha=8, targets=[r"model/layers/0/self_attn/q_proj"],
                           rngs=nnx.Rngs(1)) == 1
    # Qwen3-VL: 2 vision blocks x (qkv, proj, linear_fc1, linear_fc2) + the merger's and 2 DeepStack mergers' two
    assert lora.apply_lora(_model("qwen3_vl_tiny"), rank=4, alpha=8, targets=lora.ALL_LINEARS,
                           rngs=nnx.Rngs(1)) == 28 + 8 + 3 * 2


def test_unmatched_target_raises():
    with pytest.raises(ValueError, match="No Linear matches"):
        lora.apply_lora(_model(), rank=4, alpha=8, targets=[r"model/layers/\d+/attn/q_proj"], rngs=nnx.Rngs(1))


def test_factor_shapes_init_and_axes():
    model = _model()
    lora.apply_lora(model, rank=8, alpha=16, targets=lora.ALL_DECODER_LINEARS, rngs=nnx.Rngs(1))
    layer = model.model.layers[0].mlp.down_proj  # [384, 128], axes ('mlp', 'embed')
    assert layer.lora_a.shape == (384, 8) and layer.lora_b.shape == (8, 128)
    assert layer.lora_a.get_metadata()["logical_axes"] == ("mlp", None)
    assert layer.lora_b.get_metadata()["logical_axes"] == (None, "embed")
    assert layer.lora_scale == 2.0
    assert float(jnp.abs(layer.lora_a[...]).max()) <= 1 / np.sqrt(384)
    assert float(jnp.std(layer.lora_a[...])) > 0.5 / np.sqrt(3 * 384)  # uniform's std is bound / sqrt(3)
    assert not np.any(np.asarray(layer.lora_b[...]))


def test_fresh_adapter_leaves_logits_unchanged():
    model = _model()
    inputs = _inputs(model.config)
    before = np.asarray(model(**inputs))
    lora.apply_lora(model, rank=4, alpha=8, targets=lora.ALL_LINEARS, rngs=nnx.Rngs(1))
    # adding zero is exact; a different compiled program may reorder float sums (~1e-7)
    np.testing.assert_allclose(np.asarray(model(**inputs)), before, atol=1e-6)


@pytest.mark.parametrize("preset", ["tiny", "qwen3_vl_tiny"])
def test_merge_matches_unmerged_and_restores_the_plain_tree(tmp_path, preset):
    model = _model(preset)
    plain = _flat_shapes(model)
    inputs = _inputs(model.config)
    base = np.asarray(model(**inputs))
    lora.apply_lora(model, rank=4, alpha=8, targets=lora.ALL_LINEARS, rngs=nnx.Rngs(1))
    _randomise_b(model)
    adapted = np.asarray(model(**inputs))
    assert np.abs(adapted - base).max() > 1e-2  # the adapter matters
    lora.merge_lora(model)
    np.testing.assert_allclose(np.asarray(model(**inputs)), adapted, atol=1e-5)
    assert _flat_shapes(model) == plain and not nnx.state(model, lora.LoRAParam)
    families.save_pretrained(model, str(tmp_path))
    loaded = families.from_pretrained(str(tmp_path))
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(model, nnx.Param)),
                                 nnx.to_flat_state(nnx.state(loaded, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a[...]), np.asarray(b[...]), err_msg=str(path))


def test_grad_with_the_lora_filter_holds_only_factors():
    model = _model()
    lora.apply_lora(model, rank=4, alpha=8, targets=lora.ALL_DECODER_LINEARS, rngs=nnx.Rngs(1))
    _randomise_b(model)  # with b = 0, d/da would be zero
    ids = jnp.array([[300, 301, 417, 333, 570, 901]])
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), (3, *ids.shape))

    def loss(m):
        hidden, _ = m.forward(ids, positions)
        return jnp.mean(m.logits(hidden) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, lora.trainable(True)))(model)
    flat = nnx.to_flat_state(grads)
    assert len(flat) == 2 * 28
    assert all(isinstance(v, lora.LoRAParam) and path[-1] in ("lora_a", "lora_b") for path, v in flat)
    assert all(float(jnp.abs(v[...]).max()) > 0 for _, v in flat)
    full = nnx.to_flat_state(nnx.state(model, lora.trainable(False)))
    assert len(full) == len(_flat_shapes(_model())) + 2 * 28  # full fine-tuning sees the factors too

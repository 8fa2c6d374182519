"""Shape-only memory check: the 7B preset fits a v5e-16 slice per device, and the check can fail."""

import jax.numpy as jnp
import pytest

from gog_jax.models import families
from gog_jax.models.qwen2_5_vl import presets
from gog_jax.train import memory

V5E_16 = {"data": 1, "fsdp": 16, "tensor": 1}  # the default mesh for 7B training on v5e-16
SINGLE = {"data": 1, "fsdp": 1, "tensor": 1}
QWEN25_VL_7B_PARAMS = 8_292_166_656  # the released checkpoint's parameter count


@pytest.fixture(scope="module")
def cfg():
    return presets.model_config(presets.get("7b"))


@pytest.fixture(scope="module")
def v5e16(cfg):
    """Full fine-tuning: bf16 params, fp32 master, accumulator and AdamW state, remat, 3,072-token rows
    (4,096 would need 17.8 GiB: XLA attention's [T, T] working set outgrows the 16 GiB)."""
    return memory.estimate(cfg, V5E_16, seq_len=3072)


def test_7b_full_fine_tuning_fits_a_v5e_16_slice(v5e16):
    assert v5e16["total"] < memory.V5E_HBM_BYTES
    assert v5e16["total"] == sum(v5e16[k] for k in ("params", "master", "reference", "grads", "optimizer",
                                                    "activations"))


def test_a_single_device_does_not_fit(cfg):
    single = memory.estimate(cfg, SINGLE, seq_len=4096)
    assert single["params"] == 2 * QWEN25_VL_7B_PARAMS  # bf16, unsharded
    assert single["total"] > 5 * memory.V5E_HBM_BYTES


def test_sharded_params_add_up_to_the_whole(v5e16):
    whole = 2 * QWEN25_VL_7B_PARAMS
    # replicated leaves (norm scales, biases of unsharded axes) are counted on every device
    assert whole <= 16 * v5e16["params"] <= 1.01 * whole
    assert v5e16["master"] == 2 * v5e16["params"]  # fp32 copy of bf16 parameters
    assert v5e16["grads"] == 3 * v5e16["params"]  # fp32 accumulator + bf16 micro-batch gradient
    # adam: two fp32 moments per parameter (twice bf16 each), plus replicated step counters
    assert 4 * v5e16["params"] <= v5e16["optimizer"] <= 4 * v5e16["params"] + 64


def test_grpo_length_rows_need_a_fused_attention_kernel_and_a_v5e_32(cfg):
    """10k-token rows: XLA attention's [T, T] working set fits nowhere; with a fused kernel the
    fp32 master + Adam state (20 bytes a parameter in all) needs 32 chips, not 16."""
    v5e_32 = dict(V5E_16, fsdp=32)
    assert memory.GRPO_SEQ_LEN == 10240
    assert memory.estimate(cfg, v5e_32)["total"] > memory.V5E_HBM_BYTES
    assert memory.estimate(cfg, V5E_16, flash_attention=True)["total"] > memory.V5E_HBM_BYTES
    assert memory.estimate(cfg, v5e_32, flash_attention=True)["total"] < memory.V5E_HBM_BYTES


def test_lora_trains_only_the_factors(cfg, v5e16):
    t = cfg.text
    kv = t.num_key_value_heads * t.head_dim
    # rank 8 on q, o (D -> D), k, v (D -> kv) and gate, up, down (D <-> I): r * (in + out) each
    factors = t.num_hidden_layers * 8 * (2 * 2 * t.hidden_size + 2 * (t.hidden_size + kv)
                                         + 3 * (t.hidden_size + t.intermediate_size))
    single = memory.estimate(cfg, SINGLE, seq_len=4096, lora_rank=8)
    assert single["params"] == 2 * (QWEN25_VL_7B_PARAMS + factors)
    assert single["master"] == 4 * factors  # fp32 copy of the bf16 factors
    assert single["grads"] == (4 + 2) * factors  # fp32 accumulator + bf16 micro-batch gradient
    assert 8 * factors <= single["optimizer"] <= 8 * factors + 64
    sharded = memory.estimate(cfg, V5E_16, seq_len=4096, lora_rank=8)
    assert sharded["optimizer"] < 0.05 * v5e16["optimizer"]  # many factors are small enough to replicate


@pytest.mark.parametrize("name,billions", [("qwen3_vl_2b", 2.13), ("qwen3_vl_4b", 4.44), ("qwen3_vl_8b", 8.77)])
def test_qwen3_vl_presets_have_the_released_sizes(name, billions):
    """The estimate builds any family's model; the parameter counts are the model cards' (2B, 4B, 8B)."""
    family, shapes = families.preset(name)
    single = memory.estimate(families.named(family).model_config(shapes), SINGLE, seq_len=1024)
    assert round(single["params"] / 2 / 1e9, 2) == billions  # bf16


def test_activation_terms_by_hand():
    cfg = presets.model_config(presets.get("tiny"))
    acts = memory.activation_bytes(cfg, rows=2, seq_len=64, tensor=1, dtype=jnp.bfloat16, flash_attention=True,
                                   logits_chunk=512)
    assert acts["decoder_saved"] == 4 * 2 * 64 * 128 * 2  # layers x rows x T x D x bf16
    assert acts["logits_chunk"] == 4 * 2 * 64 * 512 * 4
    dense = memory.activation_bytes(cfg, rows=2, seq_len=64, tensor=1, dtype=jnp.bfloat16)
    # the XLA path adds fp32 scores + bf16 probabilities [rows, heads, T, T], twice (forward, cotangent)
    flash_attn = 2 * 4 * 64 * 4  # a float32 logsumexp per query
    assert dense["decoder_working"] - acts["decoder_working"] == 2 * (2 * 4 * 64 * 64 * 6 - flash_attn)


def test_vision_scores_by_hand(cfg):
    """7B's tower on 4,096 patches: 4 full blocks hold [P, P] scores, the 28 windowed ones [P, 3 x 64]
    (banded), fp32 scores + bf16 probabilities, 16 heads; plus one block's cotangents (a full one)."""
    p, per_score = 4096, 16 * (4 + 2)
    full, banded = per_score * p * p, per_score * p * 3 * 64
    tensors = p * (8 * 1280 + 4 * 3420) * 2
    vision = memory.activation_bytes(cfg, rows=1, seq_len=64, tensor=1, image_patches=p)["vision"]
    assert vision == 33 * tensors + 4 * full + 28 * banded + full

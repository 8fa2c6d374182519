"""Shape-only check that a training step fits in each device's memory (DESIGN §5), without devices.

Parameters, gradients and optimizer state are counted exactly per device: the model is built
with `nnx.eval_shape` (nothing allocated), each parameter's `logical_axes` go through the same
`sharding.spec_for` rules the trainer uses, on a `jax.sharding.AbstractMesh` of the requested
shape, and the optimizer state is `jax.eval_shape(optimizer.init)` of the trainable parameters
(its moment leaves keep their Variables' axes, so they shard like the parameters; scalars are
replicated). Activations are an analytic upper estimate of one micro-batch's forward+backward
(`activation_bytes` lists its assumptions). Not counted: the sampling engine's KV cache, XLA
scratch/fragmentation and the gathered weights of one layer under FSDP (a few hundred MB at 7B).
"""

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding

from gog_jax import sharding as sharding_lib
from gog_jax.models import families
from gog_jax.models import lora as lora_lib
from gog_jax.models.qwen2_5_vl.config import VLConfig
from gog_jax.models.qwen2_5_vl.vision import window_patches
from gog_jax.train import optim

V5E_HBM_BYTES = 16 * 2**30
# 8,192 response tokens (DESIGN §1) + a prompt with its image: one packed row per device.
GRPO_SEQ_LEN = 8192 + 2048


def abstract_mesh(mesh_shape: Mapping[str, int]) -> AbstractMesh:
    """A device-free mesh with the axes of `mesh_shape` (axis name -> size)."""
    return AbstractMesh(tuple(int(s) for s in mesh_shape.values()), tuple(mesh_shape))


def sharded_bytes(state, mesh: AbstractMesh, rules=sharding_lib.DEFAULT_RULES, dtype=None) -> int:
    """Per-device bytes of a tree: Variables by their `logical_axes`, any other array replicated.

    dtype: count every leaf in this dtype instead of its own (e.g. gradients of another precision).
    """
    total = 0
    for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        value = leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf
        shape = tuple(value.shape)
        axes = (leaf.get_metadata().get("logical_axes") if isinstance(leaf, nnx.Variable) else None)
        spec = sharding_lib.spec_for(axes or (None,) * len(shape), shape, mesh, rules)
        shard = NamedSharding(mesh, spec).shard_shape(shape)
        total += math.prod(shard) * jnp.dtype(dtype or value.dtype).itemsize
    return total


def _split(n: int, parts: int) -> float:
    """A dimension's per-device share when sharded `parts` ways (whole when it does not divide)."""
    return n / parts if n % parts == 0 else n


def activation_bytes(cfg: VLConfig, *, rows: int, seq_len: int, tensor: int, dtype=jnp.bfloat16,
                     remat: bool = True, flash_attention: bool = False, logits_chunk: int = 4096,
                     image_patches: int = 0) -> dict[str, int]:
    """Per-device activation bytes of one micro-batch's forward + backward, by term.

    Assumptions: activations in `dtype` (the model computes in its parameters' dtype); rows are
    split over the batch axes and heads / MLP width over `tensor` (when it divides). Under remat
    each decoder block keeps its input [rows, T, D]; the block being recomputed holds its forward
    tensors (norm outputs, q/k before and after rotary, v, attention output, MLP gate/up/act/product)
    twice over (their cotangents). Attention (`layers.attention`) materialises float32 scores and
    `dtype` probabilities [rows, heads, T, T]; `flash_attention` counts a fused kernel's O(T)
    residuals instead. The vocabulary scan of `losses.token_logprobs` holds ~4 float32
    [rows, T, chunk] buffers. The vision tower (no remat there) keeps every block's tensors for
    `image_patches` patches per device; its full-attention blocks hold [P, P] scores, its windowed
    blocks [P, 3 x window patches] (`vision.banded_attention`).
    """
    t, b, e = cfg.text, rows, jnp.dtype(dtype).itemsize
    T, D, H = seq_len, t.hidden_size, t.head_dim
    heads, kv = _split(t.num_attention_heads, tensor), _split(t.num_key_value_heads, tensor)
    mlp = _split(t.intermediate_size, tensor)
    # fused kernel: a float32 logsumexp per query; XLA: float32 scores + probabilities per query-key pair
    attn = b * heads * T * 4 if flash_attention else b * heads * T * T * (4 + e)
    # [.., D]: two norm outputs, o_proj output, mid-block residual, down output, block output
    layer = b * T * (6 * D + 2 * (heads + kv) * H + kv * H + heads * H + 4 * mlp) * e + attn
    terms = {
        "decoder_saved": t.num_hidden_layers * (b * T * D * e if remat else layer),
        "decoder_working": 2 * layer if remat else layer,
        "mask_and_rotary": b * T * T + 2 * b * T * H * e,  # the bool mask [B, T, T] is shared by all blocks
        "embed_and_final": 3 * b * T * D * 4,
        "logits_chunk": 4 * b * T * min(logits_chunk, t.vocab_size) * 4,
    }
    if image_patches:
        v, p = cfg.vision, image_patches
        v_heads, v_mlp = _split(v.num_heads, tensor), _split(v.intermediate_size, tensor)
        tensors = p * (8 * v.hidden_size + 4 * v_mlp) * e
        # Qwen2.5-VL's windowed blocks attend in bands; every other block (all of Qwen3-VL's) in full
        full = getattr(v, "fullatt_block_indexes", range(v.depth))
        scores = [v_heads * p * (p if i in full else min(p, 3 * window_patches(v))) * (4 + e) for i in range(v.depth)]
        terms["vision"] = (v.depth + 1) * tensors + sum(scores) + max(scores)  # + one block's cotangents
    return {k: int(x) for k, x in terms.items()}


def estimate(model_config: VLConfig, mesh_shape: Mapping[str, int], rules=sharding_lib.DEFAULT_RULES, *,
             batch_per_device: int = 1, seq_len: int = GRPO_SEQ_LEN, param_dtype=jnp.bfloat16,
             master_dtype=jnp.float32, optimizer: optax.GradientTransformation | None = None,
             reference: bool = False, lora_rank: int = 0,
             lora_targets: Sequence[str] = lora_lib.ALL_DECODER_LINEARS, remat: bool = True,
             flash_attention: bool = False, logits_chunk: int = 4096, image_patches: int = 0) -> dict[str, int]:
    """Per-device bytes of one training step: params, master, reference, grads, optimizer, activations, total.

    Counts what the `Learner` holds. params: every weight in `param_dtype` (trainable and frozen).
    master: the Learner's copy of the trainable parameters in `master_dtype` when that is wider
    than `param_dtype` (bfloat16 training at a small learning rate needs it: an update of 2e-6
    relative is far below bfloat16's 2^-8 resolution and rounds away); the optimizer then updates
    the master, so `optimizer` (default: `optim.make_optimizer`'s AdamW) keeps its moments in that
    dtype, and the gradient accumulator has it too. grads: the accumulator plus the current
    micro-batch's gradient (`param_dtype`). reference: the Learner's frozen copy of the trainable
    parameters for the KL term. lora_rank > 0: only LoRA factors on `lora_targets` train. The
    `act_*` entries break the activations down (see `activation_bytes`).
    """
    mesh = abstract_mesh(mesh_shape)

    def build():
        model = families.build(model_config, param_dtype)
        if lora_rank:
            lora_lib.apply_lora(model, rank=lora_rank, alpha=float(lora_rank), targets=lora_targets,
                                rngs=nnx.Rngs(1))
        return model

    model = nnx.eval_shape(build)
    trainable = nnx.state(model, lora_lib.trainable(bool(lora_rank)))
    if optimizer is None:
        optimizer = optim.make_optimizer(learning_rate=1e-6, warmup_steps=0, total_steps=1, weight_decay=0.0,
                                         clip_norm=1.0)
    master = master_dtype is not None and jnp.dtype(master_dtype).itemsize > jnp.dtype(param_dtype).itemsize
    updated_dtype = master_dtype if master else param_dtype  # what the optimizer updates
    opt_state = jax.eval_shape(optimizer.init,
                               jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, updated_dtype), trainable))
    acts = activation_bytes(model_config, rows=batch_per_device, seq_len=seq_len,
                            tensor=int(mesh_shape.get("tensor", 1)), dtype=param_dtype, remat=remat,
                            flash_attention=flash_attention, logits_chunk=logits_chunk, image_patches=image_patches)
    out = {
        "params": sharded_bytes(nnx.state(model, nnx.Param), mesh, rules),
        "master": sharded_bytes(trainable, mesh, rules, dtype=master_dtype) if master else 0,
        "reference": sharded_bytes(trainable, mesh, rules) if reference else 0,
        "grads": (sharded_bytes(trainable, mesh, rules, dtype=updated_dtype)
                  + sharded_bytes(trainable, mesh, rules, dtype=param_dtype)),
        "optimizer": sharded_bytes(opt_state, mesh, rules),
        "activations": sum(acts.values()),
    }
    out["total"] = sum(out.values())
    out.update({f"act_{k}": v for k, v in acts.items()})
    return out

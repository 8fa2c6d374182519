"""LoRA: low-rank factors on chosen `Linear` layers, trained alone and folded back for export.

`apply_lora` gives every `Linear` whose module path matches a target regex the factors
a [in, r] (PEFT's default init: kaiming-uniform, bound 1/sqrt(in)) and b [r, out] (zeros), so
a fresh adapter leaves the model's outputs unchanged; the layer then computes
x @ kernel (+ bias) + (x @ a @ b) * alpha / r. The factors are `LoRAParam`s, a subclass of
`nnx.Param`, so a trainer picks them with an nnx filter (`trainable(lora=True)`) while
full fine-tuning (`nnx.Param`) still sees every parameter. `merge_lora` folds the factors into
the kernels and removes them, restoring the plain parameter tree `weights.save_pretrained` writes.
"""

import math
import re
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gog_jax.models.layers import Linear

# Module paths are '/'-joined attribute names and indexes, matched in full (re.fullmatch).
ALL_DECODER_LINEARS: tuple[str, ...] = (
    r"model/layers/\d+/self_attn/(q|k|v|o)_proj",
    r"model/layers/\d+/mlp/(gate|up|down)_proj",
)
# Every Linear of the vision blocks, mergers and decoder, under either family's names (Qwen2.5-VL:
# SwiGLU blocks, merger fc1/fc2; Qwen3-VL: GELU blocks, merger and DeepStack mergers linear_fc1/2);
# like PEFT's "all-linear", not the LM head (nor the patch embedding, a Conv3d in transformers).
ALL_LINEARS: tuple[str, ...] = ALL_DECODER_LINEARS + (
    r"visual/blocks/\d+/attn/(qkv|proj)",
    r"visual/blocks/\d+/mlp/(gate_proj|up_proj|down_proj|linear_fc1|linear_fc2)",
    r"visual/merger/fc(1|2)",
    r"visual/(merger|deepstack_merger_list/\d+)/linear_fc(1|2)",
)


class LoRAParam(nnx.Param):
    """A LoRA factor: trainable when the base parameters are frozen."""


def trainable(lora: bool) -> type[nnx.Param]:
    """The nnx filter of the parameters a trainer updates: the LoRA factors, or every parameter."""
    return LoRAParam if lora else nnx.Param


def linears(model: nnx.Module) -> Iterator[tuple[str, Linear]]:
    """(path, layer) of every `Linear` in the model, paths like 'model/layers/0/self_attn/q_proj'."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, Linear):
            yield "/".join(str(p) for p in path), node


def apply_lora(model: nnx.Module, *, rank: int, alpha: float, targets: Sequence[str], rngs: nnx.Rngs,
               dtype: jnp.dtype | None = None) -> int:
    """Adds LoRA factors (in place) to every Linear whose path fully matches a target regex.

    dtype: of the factors (default: the kernel's). Returns the number of layers given factors;
    raises ValueError when no layer matches, so a typo in a target cannot train nothing silently.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1; got {rank}.")
    patterns = [re.compile(t) for t in targets]
    chosen = [(path, layer) for path, layer in linears(model) if any(p.fullmatch(path) for p in patterns)]
    if not chosen:
        examples = [path for path, _ in linears(model)][:6]
        raise ValueError(f"No Linear matches the LoRA targets {list(targets)}; paths look like {examples}.")
    for _, layer in chosen:
        if layer.lora_a is not None:
            raise ValueError("apply_lora on a layer that already has LoRA factors; merge_lora first.")
        kernel = layer.kernel
        d_in, d_out = kernel.shape
        in_axis, out_axis = kernel.get_metadata().get("logical_axes", (None, None))
        factor_dtype = dtype or kernel.dtype
        bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform(a=sqrt(5)) on torch's [r, in] weight
        a = jax.random.uniform(rngs.params(), (d_in, rank), factor_dtype, -bound, bound)
        layer.lora_a = LoRAParam(a, logical_axes=(in_axis, None))
        layer.lora_b = LoRAParam(jnp.zeros((rank, d_out), factor_dtype), logical_axes=(None, out_axis))
        layer.lora_scale = alpha / rank
    return len(chosen)


def merge_lora(model: nnx.Module) -> None:
    """Folds kernel += a @ b * scale (in float32, cast to the kernel's dtype) and drops the factors."""
    for _, layer in linears(model):
        if layer.lora_a is None:
            continue
        kernel = layer.kernel[...]
        delta = (layer.lora_a[...].astype(jnp.float32) @ layer.lora_b[...].astype(jnp.float32)) * layer.lora_scale
        layer.kernel.set_value((kernel.astype(jnp.float32) + delta).astype(kernel.dtype))
        layer.lora_a, layer.lora_b, layer.lora_scale = None, None, 0.0

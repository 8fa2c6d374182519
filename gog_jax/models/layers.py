"""Building blocks shared by the vision tower and the decoder.

Every parameter carries `logical_axes` metadata (e.g. ('embed', 'mlp')); the sharding rules
table in the config maps those names to mesh axes, so no module knows about the mesh.
`attention` (jax.nn.dot_product_attention) serves every layer without a KV cache; the
decoder's cached path (prefill, append, decode) uses `decoder.cached_attention`, the same math
over the cache's stored layouts, so the cache is never transposed per step.
"""

import jax
import jax.numpy as jnp
from flax import nnx

_INIT = nnx.initializers.normal(0.02)


class Linear(nnx.Module):
    """y = x @ kernel (+ bias); kernel [in, out] (the transpose of torch's weight).

    Optional LoRA factors lora_a [in, r] and lora_b [r, out] add (x @ a @ b) * lora_scale; they
    are set and folded away by `gog_jax.models.lora` and cost nothing while absent (None).
    """

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool, axes: tuple[str, str],
                 dtype: jnp.dtype, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_INIT(rngs.params(), (in_features, out_features), dtype), logical_axes=axes)
        self.bias = (nnx.Param(jnp.zeros((out_features,), dtype), logical_axes=axes[1:])
                     if use_bias else None)
        # nnx.data: these attributes may later hold Variables (a None attribute is static otherwise)
        self.lora_a = nnx.data(None)
        self.lora_b = nnx.data(None)
        self.lora_scale = 0.0

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x @ self.kernel[...]
        if self.bias is not None:
            y = y + self.bias[...]
        if self.lora_a is not None:
            y = y + ((x @ self.lora_a[...]) @ self.lora_b[...] * self.lora_scale).astype(y.dtype)
        return y


class RMSNorm(nnx.Module):
    """RMSNorm computed in float32, cast back before the scale (as transformers does)."""

    def __init__(self, dim: int, *, eps: float, dtype: jnp.dtype, axis: str = "norm"):
        self.scale = nnx.Param(jnp.ones((dim,), dtype), logical_axes=(axis,))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...] * normed.astype(x.dtype)


class SwiGLU(nnx.Module):
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, *, use_bias: bool, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.gate_proj = Linear(dim, hidden, use_bias=use_bias, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.up_proj = Linear(dim, hidden, use_bias=use_bias, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.down_proj = Linear(hidden, dim, use_bias=use_bias, axes=("mlp", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [..., T, N, H] rotated by cos/sin [..., T, H] (broadcast over heads), in float32."""
    x32 = x.astype(jnp.float32)
    out = x32 * cos[..., None, :] + rotate_half(x32) * sin[..., None, :]
    return out.astype(x.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled dot-product attention; q [B,T,N,H], k/v [B,S,K,H] with N % K == 0 (GQA), mask [B,T,S].

    Goes through `jax.nn.dot_product_attention`, which XLA lowers to fused kernels on GPU/TPU.
    Every query row must allow at least one key (callers let padding attend to itself).
    """
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, :, :])


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, block: int) -> jax.Array:
    """`attention` for causal self-attention (k/v as long as q, mask causal) in query blocks.

    Query block [s, s + block) attends to keys [0, s + block) only: the fully masked upper
    triangle of the [T, T] scores is never computed, which halves the FLOPs and memory traffic
    of attention — on CPU the largest cost of a packed training step (fwd+bwd of one layer on
    6 x 768 tokens: 162 ms in one piece, 90 ms in blocks of 128). block <= 0: one piece.
    """
    t = q.shape[1]
    if block <= 0 or t <= block:
        return attention(q, k, v, mask)
    return jnp.concatenate([attention(q[:, s:s + block], k[:, :s + block], v[:, :s + block],
                                      mask[:, s:s + block, :s + block]) for s in range(0, t, block)], axis=1)

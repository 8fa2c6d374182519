"""Building blocks shared by the vision tower and the decoder.

Every parameter carries `logical_axes` metadata (e.g. ('embed', 'mlp')); the sharding rules
table in the config maps those names to mesh axes, so no module knows about the mesh.
`attention` (batched matmuls, float32 softmax) serves every layer without a KV cache; the
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
        # A 2-D matmul whatever the leading dims: on CPU, XLA fuses the backward pass's
        # elementwise ops into a transpose for the weight gradient, and that fusion is ~15x
        # slower on [B, T, F] than on [B*T, F] (the tiny model's step: 3x in its MLP).
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        y = x @ self.kernel[...]
        if self.bias is not None:
            y = y + self.bias[...]
        if self.lora_a is not None:
            y = y + ((x @ self.lora_a[...]) @ self.lora_b[...] * self.lora_scale).astype(y.dtype)
        return y.reshape(*lead, y.shape[-1])


class RMSNorm(nnx.Module):
    """RMSNorm computed in float32, cast back before the scale (as transformers does)."""

    def __init__(self, dim: int, *, eps: float, dtype: jnp.dtype, axis: str = "norm"):
        self.scale = nnx.Param(jnp.ones((dim,), dtype), logical_axes=(axis,))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...] * normed.astype(x.dtype)


class LayerNorm(nnx.Module):
    """LayerNorm (scale and bias) with statistics in float32, as torch computes them."""

    def __init__(self, dim: int, *, eps: float, dtype: jnp.dtype, axis: str = "norm"):
        self.scale = nnx.Param(jnp.ones((dim,), dtype), logical_axes=(axis,))
        self.bias = nnx.Param(jnp.zeros((dim,), dtype), logical_axes=(axis,))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        normed = centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + self.eps)
        return (normed * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


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

    Scores and softmax in float32. Written as batched matmuls over [B*K, G*T, H]: the G query
    heads of a kv head form one matrix, so every product is a plain 3-D batched matmul. On
    CPU the backward pass's transposes of the [T, S] probabilities are then batched 2-D
    transposes, which XLA emits well; through jax.nn.dot_product_attention's 4-D layout a
    packed training step's attention took 1.4x as long. Every query row must allow at least
    one key (callers let padding attend to itself).
    """
    b, t, n, h = q.shape
    s, kv = k.shape[1], k.shape[2]
    g = n // kv
    q = (q * jnp.asarray(h ** -0.5, q.dtype)).reshape(b, t, kv, g, h).transpose(0, 2, 3, 1, 4)
    q = q.reshape(b * kv, g * t, h)
    k = k.transpose(0, 2, 1, 3).reshape(b * kv, s, h)
    v = v.transpose(0, 2, 1, 3).reshape(b * kv, s, h)
    scores = jnp.einsum("bmh,bsh->bms", q, k, preferred_element_type=jnp.float32)
    mask = jnp.broadcast_to(mask[:, None, None], (b, kv, g, t, s)).reshape(b * kv, g * t, s)
    probs = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    out = jnp.einsum("bms,bsh->bmh", probs.astype(v.dtype), v)
    return out.reshape(b, kv, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, block: int) -> jax.Array:
    """`attention` for causal self-attention (k/v as long as q, mask causal) in query blocks.

    Query block [s, s + block) attends to keys [0, s + block) only: the fully masked upper
    triangle of the [T, T] scores is never computed, which halves the FLOPs and memory traffic
    of attention — on CPU the largest cost of a packed training step (fwd+bwd of one layer's
    attention on 4 x 768 tokens: 99 ms in one piece, 44 ms in blocks of 128). block <= 0: one piece.
    """
    t = q.shape[1]
    if block <= 0 or t <= block:
        return attention(q, k, v, mask)
    return jnp.concatenate([attention(q[:, s:s + block], k[:, :s + block], v[:, :s + block],
                                      mask[:, s:s + block, :s + block]) for s in range(0, t, block)], axis=1)

"""Qwen2 decoder with M-RoPE, and the one functional forward shared by engine and trainers.

`forward(model, tokens, positions, ...)` covers every use: a padded batch (segment ids from the
attention mask), packed training sequences (segment ids per packed sequence), and cached
prefill/append/decode (a KV cache with a write offset per row). Image features are scattered
into the image-pad positions with static shapes.

The same decoder serves Qwen3-VL: its TextConfig switches on q/k norms and interleaved M-RoPE
(`qk_norm`, `mrope_axes`), and its image features carry DeepStack rows (see `forward`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gog_jax.models.layers import Linear, RMSNorm, SwiGLU, apply_rotary, causal_attention
from gog_jax.models.qwen2_5_vl.config import ModelConfig, TextConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values, one array per layer: k[i] [batch, kv_heads, head_dim, max_len] (keys
    stored transposed) and v[i] [batch, kv_heads, max_len, head_dim]. In these layouts both
    attention products read the cache as it lies: no per-step transpose of the cache (on CPU
    that transpose cost more than the attention itself)."""
    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @classmethod
    def zeros(cls, cfg: TextConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        kv, h, n = cfg.num_key_value_heads, cfg.head_dim, cfg.num_hidden_layers
        return cls(tuple(jnp.zeros((batch, kv, h, max_len), dtype) for _ in range(n)),
                   tuple(jnp.zeros((batch, kv, max_len, h), dtype) for _ in range(n)))

    @property
    def max_len(self) -> int:
        return self.v[0].shape[2]

    def window(self, n: int) -> "KVCache":
        """The first n positions of every row (a copy): a decode loop over short sequences in a
        long cache works on this and writes it back once with `put_window`."""
        return KVCache(tuple(k[..., :n] for k in self.k), tuple(v[:, :, :n] for v in self.v))

    def put_window(self, window: "KVCache") -> "KVCache":
        put = lambda x, w: jax.lax.dynamic_update_slice(x, w, (0,) * x.ndim)  # noqa: E731
        return KVCache(tuple(map(put, self.k, window.k)), tuple(map(put, self.v, window.v)))


@dataclasses.dataclass(frozen=True)
class LayerCache:
    """One layer's keys/values (see KVCache for layouts) as used by a batch: batch element b
    lives in cache row rows[b] (None: row b) and writes its tokens at positions slots [B, T].
    Writes are scatters that drop out-of-range positions, so XLA updates the donated cache in
    place and a padded chunk past the end, or an idle slot's write, changes nothing."""
    k: jax.Array
    v: jax.Array
    rows: jax.Array | None
    slots: jax.Array
    attend_len: int

    def write(self, k: jax.Array, v: jax.Array) -> "LayerCache":
        """k, v [B, T, kv_heads, head_dim]."""
        rows = (jnp.arange(k.shape[0]) if self.rows is None else self.rows)[:, None]
        return dataclasses.replace(self, k=self.k.at[rows, :, :, self.slots].set(k.astype(self.k.dtype), mode="drop"),
                                   v=self.v.at[rows, :, self.slots].set(v.astype(self.v.dtype), mode="drop"))

    def read(self) -> tuple[jax.Array, jax.Array]:
        """This batch's keys [B, kv_heads, head_dim, n] and values [B, kv_heads, n, head_dim], n = attend_len."""
        n = self.attend_len
        if self.rows is None:  # a slice, not a gather
            return self.k[..., :n], self.v[:, :, :n]
        return self.k[self.rows][..., :n], self.v[self.rows][:, :, :n]  # this batch's rows, then the window


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """`layers.attention` over a cache's layouts: q [B, T, N, H], k [B, K, H, S], v [B, K, S, H]
    (N % K == 0, GQA), mask [B, T, S] -> [B, T, N, H]. Scores and softmax in float32.

    A single query per row (decode) is written as multiply-and-reduce rather than as dots:
    XLA fuses it into one streaming pass over the cache, where the batched [G, H] x [H, S]
    dots it would otherwise emit are slow matrix-vector products on CPU.
    """
    b, t, n, h = q.shape
    kv = k.shape[1]
    q = q.reshape(b, t, kv, n // kv, h) * jnp.asarray(h ** -0.5, q.dtype)
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    if t == 1:
        scores = jnp.sum(q[:, 0, :, :, :, None] * k[:, :, None], axis=3, dtype=jnp.float32)[:, :, :, None]
    else:  # queries of a kv head as one [G * T, H] matrix, so both products are plain batched matmuls
        q = q.transpose(0, 2, 3, 1, 4).reshape(b, kv, -1, h)
        scores = jnp.einsum("bkmh,bkhs->bkms", q, k, preferred_element_type=jnp.float32)
        scores = scores.reshape(b, kv, -1, t, k.shape[-1])
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    if t == 1:
        out = jnp.sum(probs[:, :, :, 0, :, None] * v[:, :, None], axis=3)[:, None]
    else:
        out = jnp.einsum("bkms,bksh->bkmh", probs.reshape(b, kv, -1, probs.shape[-1]), v)
        out = out.reshape(b, kv, -1, t, h).transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, n, h)


def mrope_cos_sin(positions: jax.Array, cfg: TextConfig) -> tuple[jax.Array, jax.Array]:
    """positions [3, B, T] -> cos, sin [B, T, head_dim]; frequency i turns with axis cfg.mrope_axes[i]."""
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
    per_freq = jnp.moveaxis(positions[np.asarray(cfg.mrope_axes)], 0, -1)  # [B, T, half]
    freqs = per_freq.astype(jnp.float32) * inv_freq
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class Attention(nnx.Module):
    """GQA self-attention; the config says which projections have biases and whether q and k
    are RMS-normalised per head before the rotary (Qwen3)."""

    def __init__(self, cfg: TextConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d, h = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, h
        qkv_bias = cfg.qkv_bias
        self.q_proj = Linear(d, self.num_heads * h, use_bias=qkv_bias, axes=("embed", "q_heads"), dtype=dtype,
                             rngs=rngs)
        self.k_proj = Linear(d, self.num_kv_heads * h, use_bias=qkv_bias, axes=("embed", "kv_heads"), dtype=dtype,
                             rngs=rngs)
        self.v_proj = Linear(d, self.num_kv_heads * h, use_bias=qkv_bias, axes=("embed", "kv_heads"), dtype=dtype,
                             rngs=rngs)
        self.o_proj = Linear(self.num_heads * h, d, use_bias=cfg.o_bias, axes=("q_heads", "embed"), dtype=dtype,
                             rngs=rngs)
        self.q_norm = RMSNorm(h, eps=cfg.rms_norm_eps, dtype=dtype) if cfg.qk_norm else None
        self.k_norm = RMSNorm(h, eps=cfg.rms_norm_eps, dtype=dtype) if cfg.qk_norm else None

    def __call__(self, x, cos, sin, mask, cache: "LayerCache | None", attention_block: int = 0):
        """x [B, T, D]; with a cache, this chunk's keys/values are scattered into it first.
        Without one, `attention_block` > 0 skips the masked upper triangle (`causal_attention`)."""
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if cache is None:
            out = causal_attention(q, k, v, mask, attention_block)
        else:
            cache = cache.write(k, v)
            out = cached_attention(q, *cache.read(), mask)
        return self.o_proj(out.reshape(b, t, -1)), cache


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.self_attn = Attention(cfg, dtype, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache, attention_block: int = 0):
        attn, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, attention_block)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class Decoder(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        t = cfg.text
        self.cfg = t
        self.embed_tokens = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (t.vocab_size, t.hidden_size),
                                                                      dtype), logical_axes=("vocab", "embed"))
        self.layers = nnx.List([DecoderLayer(t, dtype, rngs) for _ in range(t.num_hidden_layers)])
        self.norm = RMSNorm(t.hidden_size, eps=t.rms_norm_eps, dtype=dtype)


def attention_mask(segment_ids: jax.Array, cache_index: jax.Array | None, cache_len: int | None) -> jax.Array:
    """[B, T, S] causal mask: same segment without a cache; with one, keys up to each query's slot.

    A padding token (segment 0) may attend to padding before it, so no row is empty.
    """
    t = segment_ids.shape[1]
    if cache_index is None:
        causal = jnp.tril(jnp.ones((t, t), bool))[None]
        return causal & (segment_ids[:, :, None] == segment_ids[:, None, :])
    query_slot = cache_index[:, None] + jnp.arange(t)[None, :]  # [B, T]
    return jnp.arange(cache_len)[None, None, :] <= query_slot[:, :, None]


def image_slots(tokens: jax.Array, count: int, image_token_id: int) -> jax.Array:
    """Flat indices [count] into tokens [B, T] of the first `count` image-pad tokens, in order;
    B * T (out of range, so writes drop) where there are fewer."""
    return jnp.nonzero((tokens == image_token_id).reshape(-1), size=count, fill_value=tokens.size)[0]


def write_image_rows(x: jax.Array, slots: jax.Array, rows: jax.Array, *, add: bool = False) -> jax.Array:
    """x [B, T, D] with rows [N, D] written over (or, `add`, added to) the flat positions `slots` [N]."""
    b, t, d = x.shape
    flat, rows = x.reshape(b * t, d), rows.astype(x.dtype)
    flat = flat.at[slots].add(rows, mode="drop") if add else flat.at[slots].set(rows, mode="drop")
    return flat.reshape(b, t, d)


def forward(decoder: Decoder, tokens: jax.Array, positions: jax.Array, *, image_token_id: int,
            segment_ids: jax.Array | None = None, image_features: jax.Array | None = None,
            cache: KVCache | None = None, cache_index: jax.Array | None = None,
            cache_rows: jax.Array | None = None, attend_len: int | None = None, remat: bool = False,
            attention_block: int = 0) -> tuple[jax.Array, KVCache | None]:
    """The one functional forward. tokens [B, T], positions [3, B, T] -> (final hidden [B, T, D], cache).

    segment_ids [B, T]: 0 marks padding, distinct ids separate packed sequences (no cache).
    cache + cache_index [B]: this chunk's keys/values are written into cache row cache_rows[b]
    (default b) from position cache_index[b] on, and the chunk attends to everything cached
    before it — prefill, append and decode are the same call. Attention reads only the first
    `attend_len` (static; default all) cache positions, so a decode over short sequences in a
    long cache costs what the sequences need. Logits are left to the caller
    (`Qwen25VL.logits`), so trainers can take log-probs in vocabulary chunks instead of
    materialising [B, T, vocab]. `remat` (no cache) recomputes each block in the backward pass;
    `attention_block` (no cache) computes causal attention in query blocks of that many tokens.

    image_features: [N, D] (Qwen2.5-VL), or [1 + L, N, D] with DeepStack (Qwen3-VL): row 0
    replaces the image-pad embeddings and row 1 + i is added to the same positions after decoder
    layer i. Either way N is static (a bucket; features beyond the image-pad tokens are dropped,
    so callers pad freely) and lies on axis -2.
    """
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    x = decoder.embed_tokens[...][tokens]
    deepstack, slots = (), None
    if image_features is not None:
        if image_features.ndim == 3:
            image_features, deepstack = image_features[0], image_features[1:]
        slots = image_slots(tokens, image_features.shape[0], image_token_id)
        x = write_image_rows(x, slots, image_features)

    def add_deepstack(x: jax.Array, layer: int) -> jax.Array:
        return write_image_rows(x, slots, deepstack[layer], add=True) if layer < len(deepstack) else x

    cos, sin = mrope_cos_sin(positions, decoder.cfg)
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    attend_len = None if cache is None else (attend_len or cache.max_len)
    mask = attention_mask(segment_ids, cache_index, attend_len)
    if cache is None:
        for i, layer in enumerate(decoder.layers):
            call = type(layer).__call__
            if remat:  # training: keep only each block's input, recompute the rest
                call = nnx.remat(call, static_argnums=(6,))
            x, _ = call(layer, x, cos, sin, mask, None, attention_block)
            x = add_deepstack(x, i)
        return decoder.norm(x), None
    cache_slots = cache_index[:, None] + jnp.arange(tokens.shape[1])[None, :]
    keys, values = [], []
    for i, (layer, k, v) in enumerate(zip(decoder.layers, cache.k, cache.v)):
        x, layer_cache = layer(x, cos, sin, mask, LayerCache(k, v, cache_rows, cache_slots, attend_len))
        x = add_deepstack(x, i)
        keys.append(layer_cache.k)
        values.append(layer_cache.v)
    return decoder.norm(x), KVCache(tuple(keys), tuple(values))

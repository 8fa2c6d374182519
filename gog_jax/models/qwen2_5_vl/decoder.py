"""Qwen2 decoder with M-RoPE, and the one functional forward shared by engine and trainers.

`forward(model, tokens, positions, ...)` covers every use: a padded batch (segment ids from the
attention mask), packed training sequences (segment ids per packed sequence), and cached
prefill/append/decode (a KV cache with a write offset per row). Image features are scattered
into the image-pad positions with static shapes.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from gog_jax.models.layers import Linear, RMSNorm, SwiGLU, apply_rotary, attention
from gog_jax.models.qwen2_5_vl.config import ModelConfig, TextConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys/values of every layer: k, v [layers, batch, max_len, kv_heads, head_dim]."""
    k: jax.Array
    v: jax.Array

    @classmethod
    def zeros(cls, cfg: TextConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
        shape = (cfg.num_hidden_layers, batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


@dataclasses.dataclass(frozen=True)
class LayerCache:
    """One layer's view of a KVCache: rows [B] of the cache used by this batch, written at
    slots [B, T]. Writes are scatters into the stacked arrays, so XLA updates them in place
    (the cache is never copied per step or per layer)."""
    cache: KVCache
    layer: int
    rows: jax.Array | None  # None: row b is batch element b (decode over all slots)
    slots: jax.Array
    attend_len: int

    def write(self, k: jax.Array, v: jax.Array) -> "LayerCache":
        rows = jnp.arange(k.shape[0]) if self.rows is None else self.rows
        at = (self.layer, rows[:, None], self.slots)
        cache = KVCache(self.cache.k.at[at].set(k.astype(self.cache.k.dtype), mode="drop"),
                        self.cache.v.at[at].set(v.astype(self.cache.v.dtype), mode="drop"))
        return dataclasses.replace(self, cache=cache)

    def read(self) -> tuple[jax.Array, jax.Array]:
        """Keys/values [B, attend_len, kv_heads, head_dim] of this batch's rows."""
        n = self.attend_len
        if self.rows is None:  # a slice, not a gather
            return self.cache.k[self.layer, :, :n], self.cache.v[self.layer, :, :n]
        return self.cache.k[self.layer, self.rows, :n], self.cache.v[self.layer, self.rows, :n]


def mrope_cos_sin(positions: jax.Array, cfg: TextConfig) -> tuple[jax.Array, jax.Array]:
    """positions [3, B, T] -> cos, sin [B, T, head_dim]; frequency band i uses axis i % 3."""
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
    freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [3, B, T, half]
    bands, start = [], 0
    for i, n in enumerate(cfg.mrope_section):
        bands.append(freqs[i % 3, ..., start:start + n])
        start += n
    freqs = jnp.concatenate(bands, axis=-1)  # [B, T, half]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


class Attention(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        d, h = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, h
        self.q_proj = Linear(d, self.num_heads * h, use_bias=True, axes=("embed", "q_heads"), dtype=dtype, rngs=rngs)
        self.k_proj = Linear(d, self.num_kv_heads * h, use_bias=True, axes=("embed", "kv_heads"), dtype=dtype,
                             rngs=rngs)
        self.v_proj = Linear(d, self.num_kv_heads * h, use_bias=True, axes=("embed", "kv_heads"), dtype=dtype,
                             rngs=rngs)
        self.o_proj = Linear(self.num_heads * h, d, use_bias=False, axes=("q_heads", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache: "LayerCache | None"):
        """x [B, T, D]; with a cache, this chunk's keys/values are scattered into it first."""
        b, t, _ = x.shape
        q = apply_rotary(self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim), cos, sin)
        k = apply_rotary(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if cache is not None:
            cache = cache.write(k, v)
            k, v = cache.read()
        out = attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
        return self.o_proj(out.reshape(b, t, -1)), cache


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.self_attn = Attention(cfg, dtype, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache):
        attn, cache = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
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


def embed(decoder: Decoder, tokens: jax.Array, image_features: jax.Array | None, image_token_id: int) -> jax.Array:
    """Token embeddings with image features [N, D] written, in order, over the image-pad tokens.

    N is static (a bucket); features beyond the number of image-pad tokens are dropped, so the
    caller pads features freely without changing shapes.
    """
    x = decoder.embed_tokens[...][tokens]
    if image_features is None:
        return x
    b, t, d = x.shape
    flat = x.reshape(b * t, d)
    where = jnp.nonzero((tokens == image_token_id).reshape(-1), size=image_features.shape[0], fill_value=b * t)[0]
    flat = flat.at[where].set(image_features.astype(flat.dtype), mode="drop")
    return flat.reshape(b, t, d)


def forward(decoder: Decoder, tokens: jax.Array, positions: jax.Array, *, image_token_id: int,
            segment_ids: jax.Array | None = None, image_features: jax.Array | None = None,
            cache: KVCache | None = None, cache_index: jax.Array | None = None,
            cache_rows: jax.Array | None = None, attend_len: int | None = None,
            ) -> tuple[jax.Array, KVCache | None]:
    """The one functional forward. tokens [B, T], positions [3, B, T] -> (final hidden [B, T, D], cache).

    segment_ids [B, T]: 0 marks padding, distinct ids separate packed sequences (no cache).
    cache + cache_index [B]: this chunk's keys/values are written into cache row cache_rows[b]
    (default b) from position cache_index[b] on, and the chunk attends to everything cached
    before it — prefill, append and decode are the same call. Attention reads only the first
    `attend_len` (static; default all) cache positions, so a decode over short sequences in a
    long cache costs what the sequences need. Logits are left to the caller
    (`Qwen25VL.logits`), so trainers can take log-probs in vocabulary chunks instead of
    materialising [B, T, vocab].
    """
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    x = embed(decoder, tokens, image_features, image_token_id)
    cos, sin = mrope_cos_sin(positions, decoder.cfg)
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    attend_len = None if cache is None else (attend_len or cache.k.shape[2])
    mask = attention_mask(segment_ids, cache_index, attend_len)
    if cache is not None:
        slots = cache_index[:, None] + jnp.arange(tokens.shape[1])[None, :]
    for i, layer in enumerate(decoder.layers):
        layer_cache = None if cache is None else LayerCache(cache, i, cache_rows, slots, attend_len)
        x, layer_cache = layer(x, cos, sin, mask, layer_cache)
        cache = None if layer_cache is None else layer_cache.cache
    return decoder.norm(x), cache

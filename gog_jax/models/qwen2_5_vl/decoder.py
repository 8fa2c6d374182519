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

    def __call__(self, x, cos, sin, mask, kv: tuple[jax.Array, jax.Array] | None, cache_index: jax.Array | None):
        """x [B, T, D]; kv: this layer's cache (k, v) [B, S, K, H] written at `cache_index` [B]."""
        b, t, _ = x.shape
        q = apply_rotary(self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim), cos, sin)
        k = apply_rotary(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim), cos, sin)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if kv is not None:
            write = jax.vmap(lambda cache, new, i: jax.lax.dynamic_update_slice_in_dim(cache, new, i, axis=0))
            k = write(kv[0], k.astype(kv[0].dtype), cache_index)
            v = write(kv[1], v.astype(kv[1].dtype), cache_index)
        out = attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
        return self.o_proj(out.reshape(b, t, -1)), (k, v)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.self_attn = Attention(cfg, dtype, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, kv, cache_index):
        attn, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv, cache_index)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), kv


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
            cache: KVCache | None = None, cache_index: jax.Array | None = None) -> tuple[jax.Array, KVCache | None]:
    """The one functional forward. tokens [B, T], positions [3, B, T] -> (final hidden [B, T, D], cache).

    segment_ids [B, T]: 0 marks padding, distinct ids separate packed sequences (no cache).
    cache + cache_index [B]: keys/values of this chunk are written at cache_index[b] and the chunk
    attends to everything cached before it (prefill, append and decode are the same call).
    Logits are left to the caller (`Qwen25VL.logits`), so trainers can compute log-probs in
    vocabulary chunks instead of materialising [B, T, vocab].
    """
    if segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)
    x = embed(decoder, tokens, image_features, image_token_id)
    cos, sin = mrope_cos_sin(positions, decoder.cfg)
    mask = attention_mask(segment_ids, cache_index, None if cache is None else cache.k.shape[2])
    new_k, new_v = [], []
    for i, layer in enumerate(decoder.layers):
        kv = None if cache is None else (cache.k[i], cache.v[i])
        x, (k, v) = layer(x, cos.astype(x.dtype), sin.astype(x.dtype), mask, kv, cache_index)
        new_k.append(k)
        new_v.append(v)
    new_cache = None if cache is None else KVCache(jnp.stack(new_k), jnp.stack(new_v))
    return decoder.norm(x), new_cache

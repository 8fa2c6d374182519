"""The engine's device state and its jitted programs: encode, append, configure, fork, decode.

All programs take the model's parameters as an argument (the graph definition is static), so
the trainer's updated parameters are used in place with no copy and no recompilation, and all
donate the decode state. Shapes depend only on the slot count, the cache length, the chunk
bucket and the patch bucket. On a mesh, a `Layout` (static) pins the state every program
returns: the KV cache and logits shard their slot axis over the batch mesh axes (the cache its
kv heads over `tensor` too), the small per-slot vectors the host reads stay replicated.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gog_jax import sharding as sharding_lib
from gog_jax.models.qwen2_5_vl import KVCache
from gog_jax.models.qwen2_5_vl.model import VisionLanguageModel
from gog_jax.sampling import sample as sample_lib


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    """Per-slot decoding state; S slots, C cache positions, V vocabulary."""
    cache: KVCache             # per layer k [S, kv_heads, head_dim, C], v [S, kv_heads, C, head_dim]
    lengths: jax.Array         # [S] tokens in the cache (next write position)
    next_pos: jax.Array        # [S] next M-RoPE text position
    logits: jax.Array          # [S, V] next-token logits after the last cached token
    active: jax.Array          # [S] bool: decoding
    finish: jax.Array          # [S] 0 running/idle, 1 stop, 2 length
    keys: jax.Array            # [S, 2] request PRNG key
    sample_index: jax.Array    # [S] tokens sampled by the request so far (folded into its key)
    count: jax.Array           # [S] tokens generated in the current decode phase
    budget: jax.Array          # [S] max new tokens of the phase
    min_new: jax.Array         # [S]
    temperature: jax.Array     # [S]
    top_k: jax.Array           # [S]
    top_p: jax.Array           # [S]
    stop_ids: jax.Array        # [S, W] (-1 padding)
    stop_seqs: jax.Array       # [S, N, L] right-aligned, -1 wildcard, -2 unused row
    recent: jax.Array          # [S, L] newest tokens of the phase, right-aligned (-2 before start)

    @classmethod
    def create(cls, model: VisionLanguageModel, slots: int, cache_len: int, stop_width: int, stop_count: int,
               stop_len: int) -> "DecodeState":
        i32 = lambda fill, *shape: jnp.full(shape, fill, jnp.int32)  # noqa: E731
        return cls(
            cache=KVCache.zeros(model.config.text, slots, cache_len, model.dtype),
            lengths=i32(0, slots), next_pos=i32(0, slots),
            logits=jnp.zeros((slots, model.config.text.vocab_size), jnp.float32),
            active=jnp.zeros((slots,), bool), finish=i32(0, slots),
            keys=jnp.zeros((slots, 2), jnp.uint32), sample_index=i32(0, slots), count=i32(0, slots),
            budget=i32(0, slots), min_new=i32(0, slots), temperature=jnp.zeros((slots,), jnp.float32),
            top_k=i32(0, slots), top_p=jnp.ones((slots,), jnp.float32), stop_ids=i32(-1, slots, stop_width),
            stop_seqs=i32(-2, slots, stop_count, stop_len), recent=i32(-2, slots, stop_len))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the decode state lives (a static jit argument; the default: wherever it is, unpinned).

    A 7B policy's cache for 64 slots of 10k tokens is ~75 GB: replicated it fits no chip, sharded
    over a v5e-16's 16 chips it is ~5 GB each. Programs touch one slot's row only through gathers
    and scatters (never dynamic slices, which XLA's SPMD partitioner turns into an all-gather of
    the whole cache), so a prefill or fork moves one row, not the cache.
    """
    cache: NamedSharding | None = None
    logits: NamedSharding | None = None
    replicated: NamedSharding | None = None

    @classmethod
    def on(cls, mesh: Mesh, state: "DecodeState", rules=sharding_lib.DEFAULT_RULES) -> "Layout":
        """Slots over the rules' `batch` axes and cache heads over `kv_heads`, where they divide."""
        spec = lambda axes, x: NamedSharding(mesh, sharding_lib.spec_for(axes, x.shape, mesh, rules))  # noqa: E731
        return cls(cache=spec(("batch", "kv_heads", None, None), state.cache.k[0]),
                   logits=spec(("batch", None), state.logits), replicated=NamedSharding(mesh, PartitionSpec()))

    def shardings(self, state: "DecodeState") -> "DecodeState":
        tree = jax.tree.map(lambda _: self.replicated, state)
        return dataclasses.replace(tree, cache=jax.tree.map(lambda _: self.cache, state.cache), logits=self.logits)

    def pin(self, state: "DecodeState") -> "DecodeState":
        return state if self.cache is None else jax.lax.with_sharding_constraint(state, self.shardings(state))

    def pin_replicated(self, tree):
        return tree if self.cache is None else jax.lax.with_sharding_constraint(tree, self.replicated)


class Graph:
    """A model's graph definition as a static jit argument that hashes in constant time.

    jit hashes static arguments on every call, and hashing an nnx GraphDef walks the whole
    model graph (milliseconds per call on a CPU, for every append and decode call).
    """

    def __init__(self, graphdef):
        self.graphdef = graphdef
        self._hash = hash(graphdef)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, Graph) and self.graphdef == other.graphdef)


def _model(graphdef, params) -> VisionLanguageModel:
    """graphdef: an nnx GraphDef or a `Graph` holding one."""
    return nnx.merge(graphdef.graphdef if isinstance(graphdef, Graph) else graphdef, params)


@functools.partial(jax.jit, static_argnums=0)
def encode(graphdef, params, pixel_values: jax.Array, meta) -> jax.Array:
    """Groups of images, patches [G, P, patch_dim] and the family's vision metadata of each
    group (stacked) -> image features [..., G * P / merge**2, D], group after group (a leading
    axis: DeepStack rows, see `decoder.forward`). The tower runs on each group apart."""
    features = jax.vmap(_model(graphdef, params).encode_images)(pixel_values, meta)  # [G, (1 + L,) U, D]
    features = jnp.moveaxis(features, 0, -3)
    return features.reshape(*features.shape[:-3], -1, features.shape[-1])


@functools.partial(jax.jit, static_argnums=(0, 11, 12), donate_argnums=2)
def append(graphdef, params, state: DecodeState, slots, starts, tokens, positions, num_valid, next_pos,
           features=None, feature_index=None, window: int | None = None, layout: Layout = Layout()) -> DecodeState:
    """Prefills n chunks, tokens [n, T] (row b: a valid prefix of num_valid[b]), into slots [n],
    row b at cache position starts[b]: one program for n prompts or observations. A row whose slot is
    out of range (>= S: padding up to a bucket of n) writes nothing.

    features [..., F, D] are the image features of every row's images (Qwen3-VL: DeepStack rows
    on a leading axis); feature_index [n * T] gives, for the k-th image-pad token of the chunk in
    row-major order, its row along F (out of range: none). Each row attends to the first
    `window` cache positions (static; a bucket holding every row's starts[b] + T), not the whole
    cache.
    """
    model = _model(graphdef, params)
    if features is not None:
        features = jnp.take(features, feature_index, axis=-2, mode="fill", fill_value=0)
    hidden, cache = model.forward(tokens, positions, image_features=features, cache=state.cache,
                                  cache_index=starts, cache_rows=slots, attend_len=window)
    last = model.logits(jnp.take_along_axis(hidden, (num_valid - 1)[:, None, None], axis=1)[:, 0])
    set_rows = lambda x, v: x.at[slots].set(v, mode="drop")  # noqa: E731
    return layout.pin(dataclasses.replace(
        state, cache=cache, lengths=set_rows(state.lengths, starts + num_valid),
        next_pos=set_rows(state.next_pos, next_pos), logits=set_rows(state.logits, last)))


@functools.partial(jax.jit, static_argnums=11, donate_argnums=0)
def configure(state: DecodeState, slots, key, budget, min_new, temperature, top_k, top_p, stop_ids,
              stop_seqs, start_sample_index, layout: Layout = Layout()) -> DecodeState:
    """Starts a decode phase on the slots in mask `slots` [S] with one request's settings.

    key [S, 2] per slot (forked requests get different keys); start_sample_index [S].
    """
    pick = lambda new, old: jnp.where(slots.reshape(slots.shape + (1,) * (old.ndim - 1)), new, old)  # noqa: E731
    return layout.pin(dataclasses.replace(
        state, active=slots | state.active, finish=pick(0, state.finish), keys=pick(key, state.keys),
        sample_index=pick(start_sample_index, state.sample_index), count=pick(0, state.count),
        budget=pick(budget, state.budget), min_new=pick(min_new, state.min_new),
        temperature=pick(temperature, state.temperature), top_k=pick(top_k, state.top_k),
        top_p=pick(top_p, state.top_p), stop_ids=pick(stop_ids, state.stop_ids),
        stop_seqs=pick(stop_seqs, state.stop_seqs), recent=pick(-2, state.recent)))


@jax.jit
def request_keys(seeds) -> jax.Array:
    """Key data [n, ...] of `jax.random.key(seed)` for each of seeds [n] (int64), in one call:
    derived one request at a time, the keys of `open_many`'s 64 prompts were ~0.5 ms each on the
    host (several dispatches and a device-to-host copy apiece)."""
    return jax.random.key_data(jax.vmap(jax.random.key)(seeds))


@jax.jit
def fold_in_keys(key, seeds) -> jax.Array:
    """keys [n, 2]: request key [2] folded with each of seeds [n] (a group's members), in one call."""
    return jax.vmap(lambda seed: jax.random.key_data(jax.random.fold_in(jax.random.wrap_key_data(key), seed)))(seeds)


@functools.partial(jax.jit, static_argnums=4, donate_argnums=0)
def fork(state: DecodeState, source, targets, keys, layout: Layout = Layout()) -> DecodeState:
    """Copies slot `source`'s row (cache, length, positions, logits and the decode settings
    `configure` gave it) to slots `targets` [n], each starting with its own PRNG key keys [n, 2].

    A gather of the source row and a scatter into the n target rows of the donated state: the
    write touches n rows, not the cache (a select over every slot cost 62 ms a fork for the
    default's 64 slots on CPU). On a slot-sharded cache it moves one row. Copying the settings
    too starts the whole group in this one program, not one `configure` per member."""
    def copy(x):
        src = x[jnp.asarray(source)[None]]
        return x.at[targets].set(jnp.broadcast_to(src, targets.shape + x.shape[1:]), mode="drop")
    copied = jax.tree.map(copy, state)
    return layout.pin(dataclasses.replace(copied, keys=copied.keys.at[targets].set(keys, mode="drop")))


def _decode_step(model: VisionLanguageModel, state: DecodeState, max_len: int):
    slots = jnp.arange(state.active.shape[0])
    is_stop_id = jnp.zeros_like(state.logits, bool).at[slots[:, None], state.stop_ids].set(True, mode="drop")
    before_min = (state.count < state.min_new)[:, None]
    masked = jnp.where(before_min & is_stop_id, -jnp.inf, state.logits)
    keys = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(state.keys), state.sample_index)
    tokens = sample_lib.sample(masked, keys, state.temperature, state.top_k, state.top_p)
    tokens = jnp.where(state.active, tokens, 0)
    logprobs = sample_lib.logprob_of(state.logits, tokens)
    positions = jnp.broadcast_to(state.next_pos[None, :, None], (3,) + tokens.shape + (1,))
    hidden, cache = model.forward(tokens[:, None], positions, cache=state.cache, cache_index=state.lengths)
    logits = model.logits(hidden[:, 0])
    act = state.active
    step = act.astype(jnp.int32)
    count = state.count + step
    recent = jnp.where(act[:, None], jnp.concatenate([state.recent[:, 1:], tokens[:, None]], axis=1), state.recent)
    allowed = count >= state.min_new
    stop = allowed & (jnp.any(tokens[:, None] == state.stop_ids, axis=-1)
                      | sample_lib.matches_stop_sequence(recent, state.stop_seqs))
    lengths = state.lengths + step
    full = (count >= state.budget) | (lengths >= max_len)
    finish = jnp.where(act & stop, 1, jnp.where(act & full, 2, state.finish))
    new_state = dataclasses.replace(
        state, cache=cache, lengths=lengths, next_pos=state.next_pos + step,
        logits=jnp.where(act[:, None], logits, state.logits), active=act & ~stop & ~full, finish=finish,
        sample_index=state.sample_index + step, count=count, recent=recent)
    return new_state, tokens, logprobs, act


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6), donate_argnums=2)
def decode(graphdef, params, state: DecodeState, num_steps: int, max_len: int, window: int,
           layout: Layout = Layout()):
    """Up to `num_steps` decode steps for every active slot in one call; stops early when none is.

    The loop runs on a copy of the first `window` cache positions, written back at the end, so
    each step attends to (and scans) only the window; the caller picks a bucket that holds
    every active slot's sequence after `num_steps` more tokens. Idle slots' writes past the
    window are dropped.
    Returns the new state and per-step tokens, log-probs and emitted flags, each [num_steps, S].
    """
    model = _model(graphdef, params)
    slots = state.active.shape[0]
    outputs = (jnp.zeros((num_steps, slots), jnp.int32), jnp.zeros((num_steps, slots), jnp.float32),
               jnp.zeros((num_steps, slots), bool))

    def cond(carry):
        i, state, _ = carry
        return (i < num_steps) & jnp.any(state.active)

    def body(carry):
        i, state, (toks, lps, emitted) = carry
        state, tokens, logprobs, act = _decode_step(model, state, max_len)
        return i + 1, layout.pin(state), (toks.at[i].set(tokens), lps.at[i].set(logprobs), emitted.at[i].set(act))

    full_cache = state.cache
    state = dataclasses.replace(state, cache=full_cache.window(window))
    _, state, outputs = jax.lax.while_loop(cond, body, (0, layout.pin(state), outputs))
    state = layout.pin(dataclasses.replace(state, cache=full_cache.put_window(state.cache)))
    return state, *layout.pin_replicated(outputs)  # every host reads them

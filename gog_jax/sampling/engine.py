"""The sampling engine: slots, sessions, continuous refill, group forks.

A `Session` is one conversation living in one slot of a dense KV cache. `open` prefills its
prompt, `step` runs one jitted multi-step decode call over every active slot and returns the
sessions that stopped, `append` prefills a tool observation (text and images, with incremental
M-RoPE) at the session's current end, and `resume` decodes again: nothing is ever re-prefilled.
`generate` is the batch API built on the same calls. Any `VisionLanguageModel` serves (Qwen2.5-VL,
Qwen3-VL): the model brings its vision metadata, and its image features, DeepStack rows
included, fill a chunk's image-pad tokens.
"""

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from gog_jax import sharding as sharding_lib
from gog_jax.models.qwen2_5_vl import rope  # both families' M-RoPE (qwen3_vl/rope.py)
from gog_jax.models.qwen2_5_vl.model import VisionLanguageModel, check_images
from gog_jax.sampling import programs
from gog_jax.sampling.params import SamplingParams, pack_stop_ids, pack_stop_sequences

DEFAULT_CHUNK_BUCKETS = (16, 32, 64, 128, 256)


class EngineError(ValueError):
    """A request the engine cannot serve (bad input, no free slot); other requests are unaffected."""


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return b
    raise EngineError(f"{n} exceeds the largest bucket {buckets[-1]}.")


def patch_bucket(n: int, unit: int) -> int:
    """Patch counts padded to powers of two (at least 64): few vision programs for any image size."""
    return max(64, 1 << (n - 1).bit_length()) if n > 0 else unit


@dataclasses.dataclass
class Session:
    """One conversation in a slot. `tokens` is its whole trajectory so far (prompt, outputs, appends)."""
    slot: int
    params: SamplingParams
    key: np.ndarray
    rope_state: rope.RopeState
    tokens: list[int] = dataclasses.field(default_factory=list)
    new_tokens: list[int] = dataclasses.field(default_factory=list)
    new_logprobs: list[float] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None
    sampled: int = 0
    decoding: bool = False
    stats: dict = dataclasses.field(default_factory=lambda: {"prefilled": 0, "appended": 0, "decoded": 0})


@dataclasses.dataclass
class GenerationOutput:
    token_ids: np.ndarray          # new tokens only, stop tokens included
    logprobs: np.ndarray           # log-prob of each under the model (raw logits)
    finish_reason: str             # "stop" | "length" | "error"
    error: str | None = None


class Engine:
    """JAX-native sampler over a slot-based KV cache; see the module docstring."""

    def __init__(self, model: VisionLanguageModel, num_slots: int = 8, max_seq_len: int = 2048, *,
                 chunk_buckets: Sequence[int] = DEFAULT_CHUNK_BUCKETS, decode_steps: int = 32,
                 max_stop_ids: int = 8, max_stop_sequences: int = 8, max_stop_len: int = 8,
                 rules=sharding_lib.DEFAULT_RULES):
        self.config, self.rules = model.config, rules
        self.vision_metadata = model.vision_metadata  # the family's host-side index arrays
        self.graphdef, self.params = nnx.split(model)
        self._graph = programs.Graph(self.graphdef)
        self.num_slots, self.max_seq_len, self.decode_steps = num_slots, max_seq_len, decode_steps
        self.chunk_buckets = tuple(sorted(chunk_buckets))
        self.stop_shape = (max_stop_ids, max_stop_sequences, max_stop_len)
        cache_len = max_seq_len + self.chunk_buckets[-1]  # room for a padded chunk at the very end
        # decode and append attend to a window of the cache sized to the longest sequence they
        # serve: powers of two and their midpoints (128, 192, 256, 384, ...) waste at most a third
        self.window_buckets = tuple(sorted({min(cache_len, base << i) for base in (128, 192)
                                            for i in range(cache_len.bit_length())}))
        self.state = programs.DecodeState.create(model, num_slots, cache_len, *self.stop_shape)
        self.layout = programs.Layout()  # set by update_params when parameters live on a mesh
        self.sessions: dict[int, Session] = {}

    # ---- parameters -------------------------------------------------------------------------
    def update_params(self, params) -> None:
        """Uses new parameters (same structure and shardings) in place: no copy, no recompilation.

        Parameters sharded over a mesh bring the decode state onto the same mesh, laid out by
        `programs.Layout.on` (cache sharded by slots and kv heads under the logical-axis rules),
        so every program runs SPMD over the mesh the trainer uses.
        """
        self.params = params
        sharding = jax.tree.leaves(params)[0].sharding
        state_devices = jax.tree.leaves(self.state)[0].sharding.device_set
        if isinstance(sharding, NamedSharding) and sharding.device_set != state_devices:
            self.layout = programs.Layout.on(sharding.mesh, self.state, self.rules)
            self.state = jax.device_put(self.state, self.layout.shardings(self.state))

    # ---- sessions ---------------------------------------------------------------------------
    @property
    def free_slots(self) -> list[int]:
        return [s for s in range(self.num_slots) if s not in self.sessions]

    def open(self, input_ids, params: SamplingParams, *, pixel_values=None, image_grid_thw=None,
             seed: int | None = None) -> Session:
        """Prefills a prompt into a free slot and starts decoding it (after the next `step`)."""
        ids = self._check_tokens(input_ids, empty_ok=False)
        if not self.free_slots:
            raise EngineError("No free slot.")
        key = np.asarray(jax.random.key_data(jax.random.key(params.seed if seed is None else seed)))
        session = Session(self.free_slots[0], params, key, rope.RopeState())
        self._prefill(session, ids, pixel_values, image_grid_thw, stat="prefilled")
        self.sessions[session.slot] = session
        self.resume(session)
        return session

    def fork(self, session: Session, n: int, seeds: Sequence[int] | None = None) -> list[Session]:
        """n - 1 copies of a freshly opened session (GRPO group): the prompt is prefilled once, and
        each copy decodes with the session's settings under its own key (the session's folded
        with `seeds[i]`, default 1 .. n - 1)."""
        if session.sampled or session.new_tokens:
            raise EngineError("Fork a session right after open, before it decodes.")
        if n < 1:
            raise EngineError(f"A group has at least one member; got n={n}.")
        seeds = list(range(1, n)) if seeds is None else list(seeds)
        if len(seeds) != n - 1:
            raise EngineError(f"Fork into {n} needs {n - 1} seeds; got {len(seeds)}.")
        targets = self.free_slots[:n - 1]
        if len(targets) < n - 1:
            raise EngineError(f"Fork needs {n - 1} free slots; {len(targets)} free.")
        if n < 2:
            return [session]
        keys = np.asarray(programs.fold_in_keys(session.key, np.asarray(seeds, np.uint32)))
        self.state = programs.fork(self.state, session.slot, np.asarray(targets, np.int32), keys, self.layout)
        copies = [Session(slot, session.params, key, session.rope_state, tokens=list(session.tokens), decoding=True)
                  for slot, key in zip(targets, keys)]
        self.sessions.update((copy.slot, copy) for copy in copies)
        return [session] + copies

    def append(self, session: Session, token_ids, *, pixel_values=None, image_grid_thw=None) -> None:
        """Prefills an observation chunk (text and images) at the end of a stopped session."""
        if session.decoding:
            raise EngineError("Cannot append to a session that is still decoding.")
        ids = self._check_tokens(token_ids, empty_ok=False, used=len(session.tokens))
        self._prefill(session, ids, pixel_values, image_grid_thw, stat="appended")

    def resume(self, session: Session, params: SamplingParams | None = None) -> None:
        """Starts a decode phase for the session (with new params if given)."""
        params = session.params = params or session.params
        eos = () if params.ignore_eos else self.config.eos_token_ids
        budget = min(params.max_new_tokens, self.max_seq_len - len(session.tokens))
        if budget < 1:
            raise EngineError(f"Session is at max_seq_len={self.max_seq_len}; nothing left to decode.")
        mask = np.zeros(self.num_slots, bool)
        mask[session.slot] = True
        width, count, length = self.stop_shape
        stop_ids = pack_stop_ids(tuple(dict.fromkeys((*eos, *params.stop_token_ids))), width)
        self.state = programs.configure(
            self.state, mask, np.broadcast_to(session.key, (self.num_slots, 2)), budget, params.min_new_tokens,
            params.temperature, params.top_k, params.top_p, stop_ids,
            pack_stop_sequences(params.stop_sequences, count, length), session.sampled, self.layout)
        session.new_tokens, session.new_logprobs, session.finish_reason = [], [], None
        session.decoding = True

    def step(self) -> list[Session]:
        """One jitted decode call (up to `decode_steps` tokens per active slot); returns stopped sessions."""
        if not any(s.decoding for s in self.sessions.values()):
            return []
        longest = max(len(s.tokens) for s in self.sessions.values() if s.decoding) + self.decode_steps
        window = self._window(longest)
        self.state, tokens, logprobs, emitted = programs.decode(
            self._graph, self.params, self.state, self.decode_steps, self.max_seq_len, window, self.layout)
        tokens, logprobs, emitted, active, finish = jax.device_get(
            (tokens, logprobs, emitted, self.state.active, self.state.finish))
        stopped = []
        for slot, session in self.sessions.items():
            if not session.decoding:
                continue
            new = tokens[emitted[:, slot], slot].tolist()
            session.new_tokens += new
            session.new_logprobs += logprobs[emitted[:, slot], slot].tolist()
            session.tokens += new
            session.sampled += len(new)
            session.stats["decoded"] += len(new)
            session.rope_state = rope.RopeState(session.rope_state.next_pos + len(new))
            if not active[slot]:
                session.decoding = False
                session.finish_reason = {1: "stop", 2: "length"}[int(finish[slot])]
                stopped.append(session)
        return stopped

    def close(self, session: Session) -> None:
        """Frees the session's slot."""
        self.sessions.pop(session.slot, None)
        session.decoding = False

    # ---- batch API --------------------------------------------------------------------------
    def generate(self, requests: Sequence[dict], params: SamplingParams) -> list[GenerationOutput]:
        """Serves any number of requests through the slots, refilling slots as requests finish.

        request: dict(input_ids=1-D ints[, pixel_values=..., image_grid_thw=..., seed=...]).
        A bad request gets finish_reason "error" and a message; the others complete.
        """
        outputs: list[GenerationOutput | None] = [None] * len(requests)
        pending = list(range(len(requests)))[::-1]
        running: dict[int, int] = {}  # slot -> request index
        while pending or running:
            while pending and self.free_slots:
                index = pending.pop()
                request = requests[index]
                try:
                    session = self.open(request["input_ids"], params, pixel_values=request.get("pixel_values"),
                                        image_grid_thw=request.get("image_grid_thw"),
                                        seed=request.get("seed", params.seed + index))
                except (EngineError, ValueError) as error:
                    outputs[index] = GenerationOutput(np.zeros(0, np.int32), np.zeros(0, np.float32), "error",
                                                      str(error))
                    continue
                running[session.slot] = index
            for session in self.step():
                outputs[running.pop(session.slot)] = GenerationOutput(
                    np.asarray(session.new_tokens, np.int32), np.asarray(session.new_logprobs, np.float32),
                    session.finish_reason)
                self.close(session)
        return outputs

    # ---- internals --------------------------------------------------------------------------
    def _check_tokens(self, token_ids, *, empty_ok: bool, used: int = 0) -> np.ndarray:
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise EngineError(f"Token ids must be a 1-D integer array; got {ids.dtype} {ids.shape}.")
        if ids.size == 0 and not empty_ok:
            raise EngineError("Empty prompt: at least one token is needed.")
        if ids.size and (ids.min() < 0 or ids.max() >= self.config.text.vocab_size):
            raise EngineError(f"Token ids must lie in [0, {self.config.text.vocab_size}).")
        if used + ids.size >= self.max_seq_len:
            raise EngineError(f"{used + ids.size} tokens leave no room to generate within "
                              f"max_seq_len={self.max_seq_len}.")
        return ids.astype(np.int32)

    def _prefill(self, session: Session, ids: np.ndarray, pixel_values, image_grid_thw, stat: str) -> None:
        """Host-side checks and positions, vision encode, then the chunk in bucket-sized pieces."""
        cfg = self.config
        grids = np.zeros((0, 3), np.int64)
        features = None
        num_pads = int(np.sum(ids == cfg.image_token_id))
        if pixel_values is not None or image_grid_thw is not None or num_pads:
            if pixel_values is None:
                raise EngineError(f"{num_pads} image-pad tokens but no pixel_values.")
            try:
                grids = check_images(cfg, pixel_values, image_grid_thw)
            except ValueError as error:
                raise EngineError(str(error)) from None
            expected = int(np.sum(np.prod(grids, -1))) // cfg.vision.spatial_merge_size ** 2
            if expected != num_pads:
                raise EngineError(f"image_grid_thw describes {expected} image tokens but the chunk holds "
                                  f"{num_pads} image-pad tokens.")
            features = self._encode(np.asarray(pixel_values), grids)
        try:
            positions, new_rope = rope.chunk_positions(ids, [tuple(g) for g in grids], session.rope_state,
                                                       cfg.image_token_id, cfg.vision.spatial_merge_size)
        except ValueError as error:
            raise EngineError(str(error)) from None
        largest = self.chunk_buckets[-1]
        feature_offset = 0
        for start in range(0, len(ids), largest):
            piece = ids[start:start + largest]
            size = bucket_for(len(piece), self.chunk_buckets)
            tokens = np.zeros(size, np.int32)
            tokens[:len(piece)] = piece
            pos = np.zeros((3, size), np.int32)
            pos[:, :len(piece)] = positions[:, start:start + len(piece)]
            end = len(session.tokens) + start + size
            self.state = programs.append(self._graph, self.params, self.state, session.slot,
                                         len(session.tokens) + start, tokens, pos,
                                         len(piece), new_rope.next_pos, features, feature_offset,
                                         self._window(end), self.layout)
            feature_offset += int(np.sum(piece == cfg.image_token_id))
        session.rope_state = new_rope
        session.tokens += ids.tolist()
        session.stats[stat] += len(ids)

    def _window(self, length: int) -> int:
        """The attention window bucket holding `length` cache positions (the whole cache at most)."""
        return bucket_for(min(length, self.window_buckets[-1]), self.window_buckets)

    def _encode(self, pixel_values: np.ndarray, grids: np.ndarray):
        unit = self.config.vision.spatial_merge_size ** 2
        size = patch_bucket(len(pixel_values), unit)
        padded = np.zeros((size, pixel_values.shape[1]), np.float32)
        padded[:len(pixel_values)] = pixel_values
        return programs.encode(self._graph, self.params, padded, self.vision_metadata(grids, self.config.vision, size))

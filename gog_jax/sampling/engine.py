"""The sampling engine: slots, sessions, continuous refill, group forks.

A `Session` is one conversation living in one slot of a dense KV cache. `open` prefills its
prompt, `step` runs one jitted multi-step decode call over every active slot and returns the
sessions that stopped, `append` prefills a tool observation (text and images, with incremental
M-RoPE) at the session's current end, and `resume` decodes again: nothing is ever re-prefilled.
`open_many` and `append_many` prefill many prompts or observations in one program call per
chunk piece (`open` and `append` are their one-request cases), and `generate`, the batch API,
opens every request that finds a free slot with `open_many`. Any `VisionLanguageModel` serves
(Qwen2.5-VL, Qwen3-VL): the model brings its vision metadata, and its image features, DeepStack
rows included, fill a chunk's image-pad tokens.
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


@dataclasses.dataclass
class _Chunk:
    """A session's next chunk, checked: its tokens, their M-RoPE positions, the rope state after
    them, and its images (pixel_values None: no image)."""
    session: Session
    ids: np.ndarray
    positions: np.ndarray
    rope: rope.RopeState
    pixel_values: np.ndarray | None
    grids: np.ndarray


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
        # prompts prefilled together: their count padded to a power of two (few programs for any count)
        self.rows_buckets = tuple(1 << i for i in range((num_slots - 1).bit_length() + 1))
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
        (session,) = self.open_many([dict(input_ids=input_ids, pixel_values=pixel_values,
                                          image_grid_thw=image_grid_thw, seed=seed)], params)
        if isinstance(session, EngineError):
            raise session
        return session

    def open_many(self, requests: Sequence[dict], params: SamplingParams) -> list[Session | EngineError]:
        """`open` for many prompts at once: their chunks are prefilled together, one program call
        per chunk piece for all of them, not one call per prompt (an accelerator serves a batch
        of prompts in about the time of one). request: dict(input_ids[, pixel_values,
        image_grid_thw, seed]) as `generate` takes them. A request that fails its checks, or
        finds every slot taken, gets its `EngineError` in its place in the result; the others
        open, in the lowest free slots."""
        results: list[Session | EngineError] = []
        chunks, seeds = [], []
        free = iter(self.free_slots)
        for request in requests:
            session = Session(-1, params, np.zeros(0, np.uint32), rope.RopeState())  # slot and key: once it passes
            try:
                ids = self._check_tokens(request["input_ids"], empty_ok=False)
                chunk = self._chunk(session, ids, request.get("pixel_values"), request.get("image_grid_thw"))
                seed = params.seed if request.get("seed") is None else request["seed"]
                if not isinstance(seed, (int, np.integer)):
                    raise EngineError(f"A seed is an integer; got {seed!r}.")
                session.slot = next(free, -1)
                if session.slot < 0:
                    raise EngineError(f"No free slot: all {self.num_slots} slots are taken.")
                chunks.append(chunk)
                seeds.append(seed)
                results.append(session)
            except (EngineError, ValueError) as error:  # ValueError: input_ids numpy cannot read
                results.append(error if isinstance(error, EngineError) else EngineError(str(error)))
        if chunks:  # the keys of all sessions in one program (padded to the slots: one shape)
            padded = np.zeros(self.num_slots, np.int64)
            padded[:len(seeds)] = seeds
            for chunk, key in zip(chunks, np.asarray(programs.request_keys(padded))):
                chunk.session.key = key
        self._prefill(chunks, stat="prefilled")
        for chunk in chunks:
            self.sessions[chunk.session.slot] = chunk.session
        self._configure([chunk.session for chunk in chunks], params)
        return results

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
        (error,) = self.append_many([(session, dict(input_ids=token_ids, pixel_values=pixel_values,
                                                    image_grid_thw=image_grid_thw))])
        if error is not None:
            raise error

    def append_many(self, requests: Sequence[tuple[Session, dict]]) -> list[EngineError | None]:
        """`append` for many stopped sessions at once, their chunks prefilled together as
        `open_many` prefills prompts. request: (session, dict(input_ids[, pixel_values,
        image_grid_thw])). A request that fails its checks gets its `EngineError` in its place
        (its session unchanged, and so is a session named twice); None where the chunk went in."""
        results: list[EngineError | None] = []
        chunks, seen = [], set()
        for session, chunk in requests:
            try:
                if session.decoding:
                    raise EngineError("Cannot append to a session that is still decoding.")
                if session.slot in seen:
                    raise EngineError(f"Session in slot {session.slot} appears twice in one append_many call.")
                ids = self._check_tokens(chunk["input_ids"], empty_ok=False, used=len(session.tokens))
                chunks.append(self._chunk(session, ids, chunk.get("pixel_values"), chunk.get("image_grid_thw")))
                seen.add(session.slot)
                results.append(None)
            except (EngineError, ValueError) as error:  # ValueError: input_ids numpy cannot read
                results.append(error if isinstance(error, EngineError) else EngineError(str(error)))
        self._prefill(chunks, stat="appended")
        return results

    def resume(self, session: Session, params: SamplingParams | None = None) -> None:
        """Starts a decode phase for the session (with new params if given)."""
        self.resume_many([session], params or session.params)

    def resume_many(self, sessions: Sequence[Session], params: SamplingParams) -> None:
        """`resume` for many sessions under the same params, in one program call."""
        self._configure(sessions, params)
        for session in sessions:
            session.params = params

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
            batch = [pending.pop() for _ in range(min(len(pending), len(self.free_slots)))]
            opened = self.open_many([dict(requests[i], seed=requests[i].get("seed", params.seed + i)) for i in batch],
                                    params) if batch else []
            for index, session in zip(batch, opened):
                if isinstance(session, EngineError):
                    outputs[index] = GenerationOutput(np.zeros(0, np.int32), np.zeros(0, np.float32), "error",
                                                      str(session))
                else:
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

    def _configure(self, sessions: Sequence[Session], params: SamplingParams) -> None:
        """Starts a decode phase under `params` for every one of `sessions` (one program call)."""
        if not sessions:
            return
        mask = np.zeros(self.num_slots, bool)
        keys = np.zeros((self.num_slots, 2), np.uint32)
        budget, sampled = np.zeros(self.num_slots, np.int32), np.zeros(self.num_slots, np.int32)
        for session in sessions:
            room = self.max_seq_len - len(session.tokens)
            if room < 1:
                raise EngineError(f"Session is at max_seq_len={self.max_seq_len}; nothing left to decode.")
            mask[session.slot], keys[session.slot] = True, session.key
            budget[session.slot], sampled[session.slot] = min(params.max_new_tokens, room), session.sampled
        eos = () if params.ignore_eos else self.config.eos_token_ids
        width, count, length = self.stop_shape
        stop_ids = pack_stop_ids(tuple(dict.fromkeys((*eos, *params.stop_token_ids))), width)
        self.state = programs.configure(
            self.state, mask, keys, budget, params.min_new_tokens, params.temperature, params.top_k, params.top_p,
            stop_ids, pack_stop_sequences(params.stop_sequences, count, length), sampled, self.layout)
        for session in sessions:
            session.new_tokens, session.new_logprobs, session.finish_reason = [], [], None
            session.decoding = True

    def _chunk(self, session: Session, ids: np.ndarray, pixel_values, image_grid_thw) -> _Chunk:
        """Host-side checks of a chunk's images against its image-pad tokens, and its M-RoPE positions."""
        cfg = self.config
        grids = np.zeros((0, 3), np.int64)
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
        try:
            positions, new_rope = rope.chunk_positions(ids, [tuple(g) for g in grids], session.rope_state,
                                                       cfg.image_token_id, cfg.vision.spatial_merge_size)
        except ValueError as error:
            raise EngineError(str(error)) from None
        pixels = None if pixel_values is None else np.asarray(pixel_values, np.float32)
        return _Chunk(session, ids, positions, new_rope, pixels, grids)

    def _prefill(self, chunks: Sequence[_Chunk], stat: str) -> None:
        """One vision encode for every chunk's images, then the chunks in pieces of at most the
        largest bucket: piece i of every chunk long enough in one program call of [n, T] tokens
        (n and T padded to buckets)."""
        if not chunks:
            return
        cfg = self.config
        features, image_rows = None, np.zeros(len(chunks), np.int64)  # each chunk's first feature row
        with_images = [c for c in chunks if c.pixel_values is not None]
        if with_images:
            features, unit_rows = self._encode([c.pixel_values for c in with_images],
                                               [grid for c in with_images for grid in c.grids])
            tokens_per_chunk = [int(np.sum(c.ids == cfg.image_token_id)) for c in chunks]
            image_rows = np.cumsum([0] + tokens_per_chunk[:-1])
        largest = self.chunk_buckets[-1]
        for start in range(0, max(len(c.ids) for c in chunks), largest):
            rows = [(c, first) for c, first in zip(chunks, image_rows) if len(c.ids) > start]
            pieces = [c.ids[start:start + largest] for c, _ in rows]
            size = bucket_for(max(map(len, pieces)), self.chunk_buckets)
            n = bucket_for(len(rows), self.rows_buckets)
            tokens, positions = np.zeros((n, size), np.int32), np.zeros((3, n, size), np.int32)
            slots = np.full(n, self.num_slots, np.int32)  # padding rows: out of range, write nothing
            starts, num_valid, next_pos = np.zeros(n, np.int32), np.ones(n, np.int32), np.zeros(n, np.int32)
            feature_index = []
            for b, ((chunk, first), piece) in enumerate(zip(rows, pieces)):
                tokens[b, :len(piece)] = piece
                positions[:, b, :len(piece)] = chunk.positions[:, start:start + len(piece)]
                slots[b], starts[b] = chunk.session.slot, len(chunk.session.tokens) + start
                num_valid[b], next_pos[b] = len(piece), chunk.rope.next_pos
                done = int(np.sum(chunk.ids[:start] == cfg.image_token_id))
                feature_index.append(first + done + np.arange(int(np.sum(piece == cfg.image_token_id))))
            index = np.full(n * size, np.iinfo(np.int32).max, np.int32)  # out of range: no feature
            flat = np.concatenate(feature_index)
            flat = unit_rows[flat] if features is not None else flat
            index[:len(flat)] = flat
            self.state = programs.append(self._graph, self.params, self.state, slots, starts, tokens, positions,
                                         num_valid, next_pos, features, None if features is None else index,
                                         self._window(int(np.max(starts)) + size), self.layout)
        for chunk in chunks:
            chunk.session.rope_state = chunk.rope
            chunk.session.tokens += chunk.ids.tolist()
            chunk.session.stats[stat] += len(chunk.ids)

    def _window(self, length: int) -> int:
        """The attention window bucket holding `length` cache positions (the whole cache at most)."""
        return bucket_for(min(length, self.window_buckets[-1]), self.window_buckets)

    def _encode(self, pixel_values: Sequence[np.ndarray], grids: Sequence[np.ndarray]
                ) -> tuple[jax.Array, np.ndarray]:
        """Image features of every image, and the row of each image token (in image order) in them.

        The tower's attention is quadratic in the patches of one call, so images go in rows of
        a single vmapped call, [G, P] patches: P is the bucket (a power of two) of the largest
        image, and images fill rows in order up to P (so small crops share a row, and scenes of
        one size go one to a row); G is padded to a power of two. A row costs P^2 in attention
        whatever it holds, so longer rows never save compute (tiny model, CPU, `open_many` of 64
        prompts with a 144-patch image each: all in one piece 5.3-8.8 s, in rows of 1,024
        patches 0.73 s, one to a 256-patch row 0.55 s)."""
        cfg = self.config.vision
        unit = cfg.spatial_merge_size ** 2
        patches = np.concatenate(pixel_values)
        sizes = [int(np.prod(grid)) for grid in grids]
        size = patch_bucket(max(sizes), unit)
        groups, used = [[]], 0
        for image, n in enumerate(sizes):
            if used + n > size:
                groups.append([])
                used = 0
            groups[-1].append(image)
            used += n
        count = 1 << (len(groups) - 1).bit_length()
        padded = np.zeros((count, size, patches.shape[1]), np.float32)
        metas, unit_rows = [], []
        starts = np.cumsum([0] + sizes)
        for g in range(count):
            images = groups[g] if g < len(groups) else []
            first = 0
            for image in images:
                padded[g, first:first + sizes[image]] = patches[starts[image]:starts[image + 1]]
                unit_rows.append(g * (size // unit) + first // unit + np.arange(sizes[image] // unit))
                first += sizes[image]
            metas.append(self.vision_metadata(np.asarray([grids[i] for i in images]).reshape(-1, 3), cfg, size))
        meta = jax.tree.map(lambda *xs: np.stack(xs), *metas)
        return programs.encode(self._graph, self.params, padded, meta), np.concatenate(unit_rows)

"""The rollout runner: many GoG episodes at once on the engine's session API.

Each question's prompt is prefilled once and forked into its group's slots; every slot decodes
until an action's closing tag; the host parses the turn and the environment acts (crop, search)
on a thread pool; the observation (text and, for a gaze, the crop) is *appended* to that slot's
cache. With `overlap_tools` the other slots keep decoding while tools run; without it (the
default) each decode call waits for the tool calls before it, so which sessions share a decode
call -- and hence every float -- does not depend on thread timing, and a resumed run repeats
its rollouts exactly. An episode ends with an answer, the turn or
token budget of its environment, or when its next observation no longer fits the engine's
`max_seq_len` (truncated, never a crash). Finished groups free their slots for the next ones.
"""

import concurrent.futures
import dataclasses
import functools
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import logging

from gog_jax.agent import env as env_lib
from gog_jax.agent import protocol, rewards
from gog_jax.agent import render as render_lib
from gog_jax.agent.tokenizer import Tokenizer, stop_token_sequences
from gog_jax.rollout.packing import image_inputs
from gog_jax.sampling import Engine, EngineError, SamplingParams


@dataclasses.dataclass
class Trajectory:
    """One episode as the trainer needs it.

    token_ids [T]: the whole conversation (prompt, assistant turns, observations); logprobs [T]:
    the sampler's log-prob of each sampled token (0 elsewhere); loss_mask [T]: True on sampled
    (assistant) tokens only; images: question image then crops, in the order of their pad runs.
    """

    qid: str
    group: int
    token_ids: np.ndarray
    logprobs: np.ndarray
    loss_mask: np.ndarray
    images: list[np.ndarray]
    trace: list[dict[str, Any]]
    prediction: str | None
    truncated: str | None
    kind: str
    reward: dict[str, float] = dataclasses.field(default_factory=dict)
    turns: list[protocol.Turn] = dataclasses.field(default_factory=list)

    @property
    def actions(self) -> list[str]:
        return [record["action"] for record in self.trace]


@dataclasses.dataclass
class _Episode:
    """Host-side state of one live episode (one slot)."""

    question: env_lib.Question
    group: int
    sample: int
    env: env_lib.GoGEnv
    session: Any = None
    token_ids: list[np.ndarray] = dataclasses.field(default_factory=list)
    logprobs: list[np.ndarray] = dataclasses.field(default_factory=list)
    loss_mask: list[np.ndarray] = dataclasses.field(default_factory=list)
    images: list[np.ndarray] = dataclasses.field(default_factory=list)
    truncated: str | None = None

    def add(self, ids, role: str, logprobs=None, images: Sequence[np.ndarray] = ()) -> None:
        ids = np.asarray(ids, np.int32)
        self.token_ids.append(ids)
        self.logprobs.append(np.zeros(len(ids), np.float32) if logprobs is None else np.asarray(logprobs, np.float32))
        self.loss_mask.append(np.full(len(ids), role == "assistant"))
        self.images.extend(images)


# (prediction, gold answers, assistant texts, question=...) -> {"reward", "accuracy", "format", ...}
RewardFn = Callable[..., dict[str, float]]


def seed_of(*parts) -> int:
    """A stable 31-bit seed from any parts (question id, step, sample index)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


class RolloutRunner:
    """Drives `engine` and one `GoGEnv` per slot; see the module docstring."""

    def __init__(self, engine: Engine, backend, tokenizer: Tokenizer, env_config: env_lib.EnvConfig,
                 vision: render_lib.VisionSpec, *, reward_fn: RewardFn | None = None, num_workers: int = 8,
                 overlap_tools: bool = False):
        self.engine, self.backend, self.tokenizer = engine, backend, tokenizer
        self.env_config, self.vision = env_config, vision
        self.reward_fn = reward_fn or functools.partial(rewards.episode_reward, grammar=env_config.grammar)
        self.overlap_tools = overlap_tools
        self.stop_sequences = tuple(tuple(s) for s in stop_token_sequences(tokenizer, protocol.stop_strings(
            env_config.grammar)))
        self.eos_ids = set(engine.config.eos_token_ids)
        self.pool = concurrent.futures.ThreadPoolExecutor(num_workers, thread_name_prefix="gog-tools")
        self.failures: list[tuple[str, str]] = []  # (question id, error) of questions that could not start

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def sampling_params(self, params: SamplingParams) -> SamplingParams:
        """The caller's params with the grammar's closing tags as stop sequences."""
        return dataclasses.replace(params, stop_sequences=tuple(dict.fromkeys(params.stop_sequences +
                                                                                self.stop_sequences)))

    def pixels(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
        if not images:
            return None, None
        processed = [image_inputs(image, self.vision) for image in images]
        return np.concatenate([pv for pv, _ in processed]), np.stack([grid for _, grid in processed])

    def run(self, questions: Sequence[env_lib.Question], params: SamplingParams, *, group_size: int = 1,
            seed: int = 0, on_done: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        """Rolls out `group_size` episodes per question; returns them grouped, in question order.

        A question that cannot start (corrupt image, prompt over `max_seq_len`) is logged, added
        to `failures` and skipped.
        """
        if group_size > self.engine.num_slots:
            raise ValueError(f"group_size {group_size} exceeds the engine's {self.engine.num_slots} slots.")
        params = self.sampling_params(params)
        results: list[list[Trajectory | None]] = [[None] * group_size for _ in questions]
        pending = list(range(len(questions)))[::-1]
        live: dict[int, _Episode] = {}  # slot -> episode
        futures: dict[concurrent.futures.Future, _Episode] = {}
        while pending or live:
            while pending and len(self.engine.free_slots) >= group_size:
                index = pending.pop()
                try:
                    episodes = self._open_group(questions[index], index, group_size, params, seed)
                except Exception as error:  # pylint: disable=broad-except  # one bad sample never stops a run
                    logging.warning("skipping question %s: %s: %s", questions[index].id, type(error).__name__, error)
                    self.failures.append((questions[index].id, f"{type(error).__name__}: {error}"))
                    continue
                for episode in episodes:
                    live[episode.session.slot] = episode
            for session in self.engine.step():
                episode = live[session.slot]
                text_ids = np.asarray(session.new_tokens, np.int32)
                episode.add(text_ids, "assistant", session.new_logprobs)
                text = self.tokenizer.decode(text_ids)
                futures[self.pool.submit(episode.env.step, text, len(text_ids))] = episode
            decoding = any(s.decoding for s in self.engine.sessions.values())
            if self.overlap_tools:
                done, _ = concurrent.futures.wait(list(futures), timeout=0 if decoding else None,
                                                  return_when=concurrent.futures.FIRST_COMPLETED)
            else:
                done, _ = concurrent.futures.wait(list(futures))
            for future in sorted(done, key=lambda f: futures[f].session.slot):
                episode = futures.pop(future)
                if self._continue(episode, future.result(), params):
                    continue
                self.engine.close(episode.session)
                del live[episode.session.slot]
                trajectory = self._finish(episode)
                results[episode.group][episode.sample] = trajectory
                if on_done is not None:
                    on_done(trajectory)
        return [t for group in results for t in group if t is not None]

    # ---- internals --------------------------------------------------------------------------
    def _open_group(self, question: env_lib.Question, index: int, group_size: int, params: SamplingParams,
                    seed: int) -> list[_Episode]:
        envs = [env_lib.GoGEnv(self.backend, dataclasses.replace(
            self.env_config, seed=seed_of(self.env_config.seed, seed, question.id, i))) for i in range(group_size)]
        for env in envs:
            env.reset(question)
        chunk = render_lib.render_prompt(envs[0].turns, self.tokenizer, self.vision)
        pixel_values, grid = self.pixels(chunk.images)
        first = self.engine.open(chunk.token_ids, params, pixel_values=pixel_values, image_grid_thw=grid,
                                 seed=seed_of(seed, question.id, 0))
        sessions = self.engine.fork(first, group_size, [seed_of(seed, question.id, i) for i in range(1, group_size)])
        episodes = []
        for sample, (session, env) in enumerate(zip(sessions, envs)):
            episode = _Episode(question, index, sample, env, session)
            episode.add(chunk.token_ids, "prompt", images=chunk.images)
            episodes.append(episode)
        return episodes

    def _continue(self, episode: _Episode, result: env_lib.StepResult, params: SamplingParams) -> bool:
        """Appends the observation and resumes decoding; False when the episode is over."""
        if result.done:
            episode.truncated = result.info.get("truncated")
            return False
        chunk = render_lib.render_observation(result.observation.turn, self.tokenizer, self.vision)
        ids = chunk.token_ids
        last = episode.token_ids[-1]
        if last.size and int(last[-1]) in self.eos_ids and int(ids[0]) in self.eos_ids:
            ids = ids[1:]  # the turn already ended with a sampled <|im_end|>: do not close it twice
        pixel_values, grid = self.pixels(chunk.images)
        try:
            self.engine.append(episode.session, ids, pixel_values=pixel_values, image_grid_thw=grid)
            self.engine.resume(episode.session, params)
        except EngineError as error:  # the conversation outgrew max_seq_len: an over-long episode
            episode.truncated = f"max_seq_len ({error})"
            return False
        episode.add(ids, "observation", images=chunk.images)
        return True

    def _finish(self, episode: _Episode) -> Trajectory:
        env = episode.env
        texts = [t.text for t in env.turns if t.role == "assistant"]
        reward = self.reward_fn(env.prediction, episode.question.answers, texts, question=episode.question.question)
        return Trajectory(
            qid=episode.question.id, group=episode.group, token_ids=np.concatenate(episode.token_ids),
            logprobs=np.concatenate(episode.logprobs), loss_mask=np.concatenate(episode.loss_mask),
            images=list(episode.images), trace=list(env.trace), prediction=env.prediction, truncated=episode.truncated,
            kind=episode.question.kind, reward=reward, turns=list(env.turns))

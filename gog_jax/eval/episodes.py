"""The policy interface and the loop that runs one episode of a policy in a `GoGEnv`.

A policy maps the episode so far to the next assistant text. Scripted policies (the world's
oracles) also read `Episode.meta`, the question's ground truth; a model policy must not.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from gog_jax.agent import env as env_lib
from gog_jax.agent import protocol


@dataclasses.dataclass
class Episode:
    """What a policy sees before its next turn.

    question: what the model is asked (image, text); `turns` the conversation so far (system,
    question, then assistant and observation turns); `trace` the env's record of every action
    (errors and faults included); `max_turns` the turn budget; `meta` the ground truth,
    for scripted policies only.
    """

    question: env_lib.Question
    turns: list[protocol.Turn]
    trace: list[dict[str, Any]]
    max_turns: int
    meta: dict[str, Any]

    @property
    def turn(self) -> int:
        """1-based number of the turn about to be taken."""
        return len(self.trace) + 1


Policy = Callable[[Episode], str]


@dataclasses.dataclass
class EpisodeResult:
    question: env_lib.Question
    meta: dict[str, Any]
    turns: list[protocol.Turn]  # the whole conversation, system prompt first
    trace: list[dict[str, Any]]  # one record per assistant turn
    prediction: str | None
    truncated: str | None  # None | "turn_budget" | "token_budget"

    @property
    def assistant_texts(self) -> list[str]:
        return [t.text for t in self.turns if t.role == "assistant"]


def run_episode(env: env_lib.GoGEnv, policy: Policy, question: env_lib.Question,
                meta: dict[str, Any] | None = None) -> EpisodeResult:
    """Steps `policy` in `env` until the episode ends (the env's budgets bound it)."""
    env.reset(question)
    meta = dict(meta or {})
    info: dict[str, Any] = {}
    while not env.done:
        text = policy(Episode(question, list(env.turns), list(env.trace), env.config.max_turns, meta))
        info = env.step(text).info
    return EpisodeResult(question, meta, list(env.turns), list(env.trace), env.prediction,
                         info.get("truncated"))

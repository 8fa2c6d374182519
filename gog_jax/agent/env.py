"""The Glance-or-Gaze environment: one episode of a question, stepped by assistant text.

`reset(question)` opens an episode; `step(assistant_text)` parses the turn's action, acts
(search with the whole image, crop and search, text search, or finish) and returns the next
observation as a user turn. Everything that can go wrong -- a malformed action, a bad box, a
backend that raises or hangs, an injected fault -- becomes an error observation the model
reads; no exception leaves `step`, because one crash would kill a batch of rollouts.

The backend only ever sees the image, a crop of it, or the model's own query: never the
question text nor its kind, so the world cannot leak the answer through the tool.
"""

import dataclasses
import threading
from typing import Any, Protocol

import numpy as np

from gog_jax.agent import gaze as gaze_lib
from gog_jax.agent import protocol
from gog_jax.agent.protocol import ActionError, Answer, Gaze, Glance, Search


class Backend(Protocol):
    """What the env needs of `gog_jax.search` backends (results have title, snippet, source_id)."""

    def image_search(self, image: np.ndarray, k: int) -> list: ...

    def text_search(self, query: str, k: int) -> list: ...


@dataclasses.dataclass(frozen=True)
class Question:
    """One question of a dataset; `answers` are the gold answers (any one counts)."""

    id: str
    image: np.ndarray  # uint8 [H, W, 3], original resolution
    question: str
    answers: tuple[str, ...]
    kind: str = ""  # synthetic world: "no_search" | "glance" | "gaze"; never given to the backend


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Budgets, tool settings and fault injection.

    max_response_tokens counts assistant tokens (those reported to `step`, or the text's UTF-8
    bytes when not reported: an upper bound for any byte-level BPE).
    fault_rate: probability that a search fails on purpose (seeded), to test failure paths.
    """

    max_turns: int = 5
    max_response_tokens: int = 8192
    top_k: int = 3
    max_snippet_chars: int = 200
    search_timeout_s: float | None = 30.0
    fault_rate: float = 0.0
    seed: int = 0
    prompt: str = "full"  # system prompt style (protocol.PROMPT_STYLES)
    grammar: protocol.Grammar = protocol.DEFAULT_GRAMMAR
    gaze: gaze_lib.GazeConfig = gaze_lib.GazeConfig()


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the model sees next: a user turn (text, and for a gaze the crop before its results)."""

    turn: protocol.Turn

    @property
    def text(self) -> str:
        return self.turn.text

    @property
    def image(self) -> np.ndarray | None:
        images = self.turn.images
        return images[0] if images else None


@dataclasses.dataclass(frozen=True)
class StepResult:
    observation: Observation | None  # None once done
    done: bool
    info: dict[str, Any]


class SearchTimeout(Exception):
    """A backend call that did not return within `search_timeout_s`."""


class GoGEnv:
    """Stateful episode driver. Holds the conversation (`turns`) and the action `trace`."""

    def __init__(self, backend: Backend, config: EnvConfig = EnvConfig()):
        self.backend, self.config = backend, config
        self._rng = np.random.default_rng(config.seed)
        self.question: Question | None = None
        self.turns: list[protocol.Turn] = []
        self.trace: list[dict[str, Any]] = []
        self.prediction: str | None = None
        self.done = True
        self.response_tokens = 0

    # ------------------------------------------------------------------ episode

    def reset(self, question: Question) -> Observation:
        """Starts an episode; `turns` then holds the system prompt and the question turn."""
        self.question = question
        self.trace, self.prediction, self.done, self.response_tokens = [], None, False, 0
        system = protocol.system_prompt(self.config.grammar, self.config.gaze.relative_coords,
                                        self.config.prompt)
        first = protocol.question_turn(question.question, question.image)
        self.turns = [protocol.Turn("system", (system,)), first]
        return Observation(first)

    def step(self, assistant_text: str, num_tokens: int | None = None) -> StepResult:
        """Acts on one assistant turn. Never raises."""
        if self.done:
            return StepResult(None, True, {"error": "The episode is over; call reset.", "action": "invalid"})
        record: dict[str, Any] = {"turn": len(self.trace) + 1, "action": "invalid", "box": None,
                                  "source_ids": [], "error": None, "fault": False}
        self.trace.append(record)
        try:
            return self._step(str(assistant_text), num_tokens, record)
        except Exception as error:  # pylint: disable=broad-except  # last line of defence
            record["error"] = f"internal error: {type(error).__name__}: {error}"
            return self._continue(f"Something went wrong ({type(error).__name__}); take another action.",
                                  None, record)

    def _step(self, text: str, num_tokens: int | None, record: dict[str, Any]) -> StepResult:
        self.turns.append(protocol.assistant_turn(text))
        self.response_tokens += len(text.encode("utf-8")) if num_tokens is None else int(num_tokens)
        action = protocol.parse_action(text, self.config.grammar)
        record["action"] = protocol.action_name(action)
        if isinstance(action, Answer):
            self.prediction = action.text
            return self._finish(record, None)
        if self.response_tokens > self.config.max_response_tokens:
            return self._finish(record, "token_budget")
        if isinstance(action, ActionError):
            record["error"] = action.message
            return self._continue(action.message, None, record)
        if isinstance(action, Glance):
            return self._continue(self._search(record, "image", self.question.image), None, record)
        if isinstance(action, Search):
            return self._continue(self._search(record, "text", action.query), None, record)
        assert isinstance(action, Gaze)
        record["box_model"] = list(action.box)
        box = gaze_lib.resolve_box(action.box, self.question.image.shape[:2], self.config.gaze)
        if isinstance(box, ActionError):
            record["error"] = box.message
            return self._continue(box.message, None, record)
        record["box"] = list(box)
        patch = gaze_lib.crop(self.question.image, box, self.config.gaze)
        return self._continue(self._search(record, "image", patch), patch, record)

    def _continue(self, text: str, image: np.ndarray | None, record: dict[str, Any]) -> StepResult:
        """Returns the observation, or ends the episode if the turn budget is spent."""
        if record["turn"] >= self.config.max_turns:
            return self._finish(record, "turn_budget")
        if record["turn"] == self.config.max_turns - 1:
            text = f"{text}\n{protocol.LAST_TURN_NOTE}"
        turn = protocol.observation_turn(text, image, self.config.grammar)
        self.turns.append(turn)
        return StepResult(Observation(turn), False, dict(record))

    def _finish(self, record: dict[str, Any], truncated: str | None) -> StepResult:
        self.done = True
        info = dict(record, truncated=truncated, prediction=self.prediction, trace=list(self.trace))
        return StepResult(None, True, info)

    # ------------------------------------------------------------------ tools

    def _search(self, record: dict[str, Any], kind: str, query: Any) -> str:
        """Runs one search; results or the failure as observation text, recorded in `record`."""
        cfg = self.config
        if cfg.fault_rate and self._rng.random() < cfg.fault_rate:
            record["fault"] = True
            record["error"] = "injected fault"
            return "Search failed (the tool is unavailable); try again or take another action."
        call = self.backend.image_search if kind == "image" else self.backend.text_search
        try:
            results = list(_call_with_timeout(call, (query, cfg.top_k), cfg.search_timeout_s))
            record["source_ids"] = [str(r.source_id) for r in results]
            return protocol.results_text(results, cfg.max_snippet_chars)
        except Exception as error:  # pylint: disable=broad-except  # tools fail; the episode goes on
            record["error"] = f"{type(error).__name__}: {error}"[:300]
            return f"Search failed ({type(error).__name__}); try again or take another action."


def _call_with_timeout(fn, args: tuple, timeout_s: float | None):
    """fn(*args), raising SearchTimeout after `timeout_s`; a hung call is left on a daemon thread."""
    if timeout_s is None:
        return fn(*args)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn(*args)
        except Exception as error:  # pylint: disable=broad-except  # re-raised on the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise SearchTimeout(f"no answer within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]

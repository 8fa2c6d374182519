"""The Glance-or-Gaze action grammar: the one place its tags, prompts and parser live.

Every assistant turn is `<think>reasoning</think>` followed by exactly one action:
`<glance/>`, `<gaze>[x1, y1, x2, y2]</gaze>`, `<search>query</search>` or `<answer>text</answer>`.
Observations come back as a user turn wrapped in `<information>...</information>`.

The prompt builder, the parser, the SFT data writer and the format reward all read the same
`Grammar`, so changing a tag here changes it everywhere. The parser never raises: malformed
text becomes an `ActionError` whose message is written for the model to read and correct.
"""

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class Grammar:
    """The tags of the action grammar; the embedded tokenizer makes each one a single token."""

    think_open: str = "<think>"
    think_close: str = "</think>"
    glance: str = "<glance/>"
    gaze_open: str = "<gaze>"
    gaze_close: str = "</gaze>"
    search_open: str = "<search>"
    search_close: str = "</search>"
    answer_open: str = "<answer>"
    answer_close: str = "</answer>"
    information_open: str = "<information>"
    information_close: str = "</information>"
    require_think: bool = True
    # Written before a query or answer ("<search> Name</search>"): byte-level BPE splits " Name"
    # (as it appears mid-line in search results) and "Name" (after a tag) into different tokens,
    # so without it copying a name from the results is a re-tokenisation, not a token copy.
    text_lead: str = " "

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.think_open, self.think_close, self.glance, self.gaze_open, self.gaze_close,
                self.search_open, self.search_close, self.answer_open, self.answer_close,
                self.information_open, self.information_close)


DEFAULT_GRAMMAR = Grammar()

# Chat-template markers (Qwen); they are special tokens of every tokenizer we load.
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
LAST_TURN_NOTE = "This is your last turn: answer now."


# ----------------------------------------------------------------------------- actions

@dataclasses.dataclass(frozen=True)
class Glance:
    """Image search with the whole question image."""


@dataclasses.dataclass(frozen=True)
class Gaze:
    """Crop `box` = (x1, y1, x2, y2) in the model's coordinate frame, then image search with it."""

    box: tuple[float, float, float, float]

    def __post_init__(self):
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))


@dataclasses.dataclass(frozen=True)
class Search:
    """Text search with the model's own query."""

    query: str


@dataclasses.dataclass(frozen=True)
class Answer:
    """The final answer; ends the episode."""

    text: str


@dataclasses.dataclass(frozen=True)
class ActionError:
    """A turn that is not a well-formed action; `message` is shown to the model as feedback."""

    message: str


Action = Union[Glance, Gaze, Search, Answer]

ACTION_NAMES = {Glance: "glance", Gaze: "gaze", Search: "search", Answer: "answer"}


def action_name(action: Action | ActionError) -> str:
    """'glance' | 'gaze' | 'search' | 'answer' | 'invalid' (the eval summary's action keys)."""
    return ACTION_NAMES.get(type(action), "invalid")


# ----------------------------------------------------------------------------- parsing

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX = re.compile(rf"^\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]$")
_TRAILING_MARKERS = re.compile(r"(?:\s*(?:<\|im_end\|>|<\|endoftext\|>))+\s*$")


def _usage(g: Grammar) -> str:
    return (f"Write {g.think_open}reasoning{g.think_close} then exactly one of {g.glance}, "
            f"{g.gaze_open}[x1, y1, x2, y2]{g.gaze_close}, {g.search_open}query{g.search_close} "
            f"or {g.answer_open}answer{g.answer_close}.")


def _parse_box(content: str, g: Grammar) -> Gaze | ActionError:
    match = _BOX.match(content.strip())
    if match is None:
        inner = content.strip().strip("[]")
        parts = [p for p in re.split(r"[,\s]+", inner) if p]
        if len(parts) != 4:
            return ActionError(f"A gaze box needs exactly 4 numbers [x1, y1, x2, y2], got {len(parts)}: "
                               f"{g.gaze_open}{content.strip()[:60]}{g.gaze_close}.")
        return ActionError(f"A gaze box must be 4 numbers in brackets, like {g.gaze_open}[10, 20, 110, 140]"
                           f"{g.gaze_close}; got {g.gaze_open}{content.strip()[:60]}{g.gaze_close}.")
    box = tuple(float(v) for v in match.groups())
    if not all(math.isfinite(v) for v in box):
        return ActionError("Gaze box coordinates must be finite pixel positions.")
    return Gaze(box)


def parse_action(text: str, grammar: Grammar = DEFAULT_GRAMMAR) -> Action | ActionError:
    """Assistant text -> the one action it takes, or an `ActionError`. Never raises.

    A trailing `<|im_end|>` is tolerated, as is surrounding whitespace; anything else outside
    the think span and the single action is an error, so the format reward is strict.
    """
    g = grammar
    try:
        body = _TRAILING_MARKERS.sub("", str(text)).strip()
        if g.require_think or body.startswith(g.think_open):
            if not body.startswith(g.think_open):
                return ActionError(f"Start the turn with {g.think_open}. " + _usage(g))
            end = body.find(g.think_close)
            if end < 0:
                return ActionError(f"Close your reasoning with {g.think_close}. " + _usage(g))
            if g.think_open in body[len(g.think_open):end]:
                return ActionError(f"Only one {g.think_open} span per turn. " + _usage(g))
            body = body[end + len(g.think_close):].strip()
        if not body:
            return ActionError("No action after the reasoning. " + _usage(g))
        if body.startswith(g.glance):
            rest = body[len(g.glance):]
            return Glance() if not rest.strip() else _one_action_error(g)
        for opener, closer, build in ((g.gaze_open, g.gaze_close, lambda c: _parse_box(c, g)),
                                      (g.search_open, g.search_close, lambda c: _text_action(c, Search, g)),
                                      (g.answer_open, g.answer_close, lambda c: _text_action(c, Answer, g))):
            if body.startswith(opener):
                end = body.find(closer)
                if end < 0:
                    return ActionError(f"Close the action with {closer}. " + _usage(g))
                if body[end + len(closer):].strip():
                    return _one_action_error(g)
                return build(body[len(opener):end])
        return ActionError(f"Unknown action {body[:40]!r}. " + _usage(g))
    except Exception as error:  # pylint: disable=broad-except  # the contract is: never raise
        return ActionError(f"Could not read the turn ({type(error).__name__}). " + _usage(g))


def _one_action_error(g: Grammar) -> ActionError:
    return ActionError("Take exactly one action per turn and write nothing after it. " + _usage(g))


def _text_action(content: str, kind: type, g: Grammar) -> Search | Answer | ActionError:
    content = content.strip()
    name = "search query" if kind is Search else "answer"
    if not content:
        return ActionError(f"The {name} is empty. " + _usage(g))
    if any(tag in content for tag in g.tags):
        return ActionError(f"The {name} must not contain action tags. " + _usage(g))
    return kind(content)


def is_well_formed(text: str, grammar: Grammar = DEFAULT_GRAMMAR) -> bool:
    """The format check behind the format reward."""
    return not isinstance(parse_action(text, grammar), ActionError)


# ----------------------------------------------------------------------------- formatting

def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


def format_action(action: Action, think: str = "", grammar: Grammar = DEFAULT_GRAMMAR) -> str:
    """Inverse of `parse_action`: the assistant text for `action` with reasoning `think`."""
    g = grammar
    prefix = f"{g.think_open}{think}{g.think_close}" if (g.require_think or think) else ""
    if isinstance(action, Glance):
        return prefix + g.glance
    if isinstance(action, Gaze):
        return prefix + f"{g.gaze_open}[{', '.join(_number(v) for v in action.box)}]{g.gaze_close}"
    if isinstance(action, Search):
        return prefix + f"{g.search_open}{g.text_lead}{action.query}{g.search_close}"
    if isinstance(action, Answer):
        return prefix + f"{g.answer_open}{g.text_lead}{action.text}{g.answer_close}"
    raise TypeError(f"Not an action: {action!r}")


def stop_strings(grammar: Grammar = DEFAULT_GRAMMAR) -> tuple[str, ...]:
    """Strings that end an assistant turn: the sampler stops on any of them (then the env acts)."""
    return (grammar.glance, grammar.gaze_close, grammar.search_close, grammar.answer_close)


# ----------------------------------------------------------------------------- prompts

@dataclasses.dataclass(frozen=True)
class Turn:
    """One chat message; `parts` are text strings and uint8 images [H, W, 3] in reading order."""

    role: str  # "system" | "user" | "assistant"
    parts: tuple[Union[str, np.ndarray], ...]

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def images(self) -> list[np.ndarray]:
        return [p for p in self.parts if not isinstance(p, str)]


PROMPT_STYLES = ("full", "brief", "empty")


def system_prompt(grammar: Grammar = DEFAULT_GRAMMAR, relative_coords: bool = False, style: str = "full") -> str:
    """The tool description. "brief" and "empty" are for tiny models trained from scratch, whose
    whole sequence is ~200 tokens: a constant prompt tells them nothing the demonstrations do
    not, and the brief one is still ~30% of an SFT example's tokens (and of its compute)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"Unknown system prompt style {style!r}; known: {PROMPT_STYLES}.")
    g = grammar
    frame = ("0-1000 relative coordinates" if relative_coords
             else "pixel coordinates of the image as you see it")
    if style == "empty":
        return ""
    if style == "brief":
        return (f"Answer the question about the image. Think in {g.think_open}{g.think_close}, then act: "
                f"{g.glance} searches the image, {g.gaze_open}[x1, y1, x2, y2]{g.gaze_close} searches a region, "
                f"{g.search_open}query{g.search_close} searches text, {g.answer_open}answer{g.answer_close} ends.")
    return (
        "You answer questions about an image, using search when your own knowledge is not enough.\n"
        f"Each turn, first reason briefly inside {g.think_open}...{g.think_close}, then take exactly one action:\n"
        f"- {g.glance}: search the web with the whole image.\n"
        f"- {g.gaze_open}[x1, y1, x2, y2]{g.gaze_close}: crop the region with top-left (x1, y1) and bottom-right "
        f"(x2, y2), in {frame}, and search with the crop. Gaze when the image is cluttered and the "
        "question is about one part of it.\n"
        f"- {g.search_open}query{g.search_close}: search text for facts.\n"
        f"- {g.answer_open}answer{g.answer_close}: give the final short answer and stop.\n"
        f"Search results come back inside {g.information_open}...{g.information_close}. "
        "If a crop or search was wrong, say why and choose again.")


def question_turn(question: str, image: np.ndarray) -> Turn:
    """The first user turn: the image, then the question."""
    return Turn("user", (image, question))


def results_text(results: Sequence, max_snippet_chars: int = 200) -> str:
    """Ranked search results (objects with `title` and `snippet`) as numbered lines."""
    if not results:
        return "No results."
    return "\n".join(f"{i}. {r.title}: {str(r.snippet)[:max_snippet_chars]}" for i, r in enumerate(results, 1))


def observation_turn(text: str, image: np.ndarray | None = None,
                     grammar: Grammar = DEFAULT_GRAMMAR) -> Turn:
    """A tool observation as a user turn; a gazed crop comes first, before its results."""
    g = grammar
    if image is None:
        return Turn("user", (f"{g.information_open}{text}{g.information_close}",))
    return Turn("user", (g.information_open, image, f"{text}{g.information_close}"))


def assistant_turn(text: str) -> Turn:
    return Turn("assistant", (text,))


def corpus_texts(grammar: Grammar = DEFAULT_GRAMMAR) -> list[str]:
    """Fixed protocol text (prompts, error messages) to add to a tokenizer's training corpus."""
    g = grammar
    return [system_prompt(g), system_prompt(g, relative_coords=True), system_prompt(g, style="brief"),
            _usage(g), "No results.", LAST_TURN_NOTE]

"""Scripted policies that know the ground truth: the GoG oracle and the glance-only baseline.

Both act only through the protocol (`format_action`) and read only what the environment
returned (observation text, the action trace), so every trajectory they write is one a model
could have produced. The oracle:
  no_search -> answers from the image;
  glance    -> glance; then answers the name, or searches the name for the fact;
  gaze      -> crops the emblem the question points at (in a configurable share of episodes it
               first crops a wrong one, then says why and crops again), then as above;
  a failed search is retried; a retrieval that misses falls back to a gaze.
The glance-only oracle never gazes: on a cluttered scene its glance finds pin-board photos,
not the entity, and it answers "unknown" (the baseline the paper argues against).
"""

import dataclasses
import re
import zlib
from typing import Any

from gog_jax.agent import env as env_lib
from gog_jax.agent import gaze as gaze_lib
from gog_jax.agent import protocol
from gog_jax.agent.protocol import Answer, Gaze, Glance, Search
from gog_jax.eval.episodes import Episode
from gog_jax.world.emblems import SHAPE_WORDS
from gog_jax.world.questions import Question
from gog_jax.world.scenes import cell_box, position_phrase
from gog_jax.world.world import World

UNKNOWN = "unknown"
_FACT_NEEDS = {"founded": "founding year", "city": "home city", "founder": "founder"}
_RESULT_TITLE = re.compile(r"^\d+\. (.*?): ", re.MULTILINE)
_RESULT_LINE = re.compile(r"^\d+\. (.*?): (.*)$", re.MULTILINE)


def env_question(world: World, question: Question) -> env_lib.Question:
    """The question as the environment (and a model) sees it: image, text, golds, kind."""
    return env_lib.Question(id=question.qid, image=world.image(question), question=question.question,
                            answers=question.answers, kind=question.kind)


def question_meta(world: World, question: Question) -> dict[str, Any]:
    """Ground truth a scripted policy reads (JSON-able; also the trajectory's `meta`)."""
    target = world.entity_by_id.get(question.target) if question.target else None
    meta = {"qid": question.qid, "kind": question.kind, "attribute": question.attribute,
            "answer": question.answer, "answers": list(question.answers), "cue": question.cue,
            "target": question.target, "target_name": target.name if target else None,
            "target_box": list(question.target_box) if question.target_box else None,
            "target_ref": _reference(question, target), "wrong": None}
    if question.kind == "gaze":
        meta["wrong"] = _wrong_crop(question)
    return meta


def _reference(question: Question, target) -> str | None:
    """How the question names the target emblem ('the top-left emblem', 'this emblem')."""
    if target is None:
        return None
    if question.kind == "glance":
        return "this emblem"
    placement = next(p for p in question.scene.placements if p.entity_id == question.target)
    if question.cue == "position":
        return f"the {position_phrase(placement.cell)} emblem"
    if question.cue == "colour":
        return f"the {target.emblem.colour} emblem"
    return f"the {SHAPE_WORDS[target.emblem.shape]} emblem"


def _wrong_crop(question: Question) -> dict[str, Any]:
    """A plausible first mistake: the occupied cell nearest the target's (ties by reading order)."""
    target = next(p for p in question.scene.placements if p.entity_id == question.target)
    others = [p for p in question.scene.placements if p.entity_id != question.target]
    tr, tc = target.cell
    nearest = min(others, key=lambda p: (abs(p.cell[0] - tr) + abs(p.cell[1] - tc), p.cell))
    if question.cue == "position":
        why = (f"that crop held the {position_phrase(nearest.cell)} emblem, "
               f"not the {position_phrase(target.cell)} one")
    elif question.cue == "colour":
        why = f"that crop held a {nearest.emblem.colour} emblem, not the {target.emblem.colour} one"
    else:
        why = (f"that crop held a {SHAPE_WORDS[nearest.emblem.shape]} emblem, "
               f"not the {SHAPE_WORDS[target.emblem.shape]} one")
    return {"box": list(cell_box(nearest.cell, question.scene.size)), "entity": nearest.entity_id, "why": why}


def _fact_sentence(name: str, attribute: str, value: str) -> str:
    return {"founded": f"{name} was founded in {value}.", "city": f"{name} is based in {value}.",
            "founder": f"{name} was founded by {value}."}[attribute]


@dataclasses.dataclass
class _State:
    """What the episode so far has established, read from the trace and the observations."""
    identified: str | None  # entity name an image search returned
    fact_found: bool  # a text search returned the gold answer
    gazed_boxes: list[tuple[float, ...]]
    last: dict[str, Any] | None  # the last trace record


def _read_state(episode: Episode, name: str | None, attribute: str, answer: str) -> _State:
    identified, fact_found, boxes = None, False, []
    for i, record in enumerate(episode.trace):
        obs_index = 3 + 2 * i  # turns: system, question, then (assistant, observation) pairs
        text = episode.turns[obs_index].text if obs_index < len(episode.turns) else ""
        if record["action"] == "gaze" and record.get("box_model") is not None:
            boxes.append(tuple(record["box_model"]))
        if record.get("error"):
            continue
        if record["action"] in ("glance", "gaze") and name and _titles(text)[:1] == [name]:
            identified = name
        if record["action"] == "search" and name and attribute in _PAGE_FACTS:
            fact_found = fact_found or _fact_from_page(text, name, attribute) == answer
    return _State(identified, fact_found, boxes, episode.trace[-1] if episode.trace else None)


def _results_body(observation_text: str) -> str:
    """The numbered result lines of an observation, with its tags turned into line breaks."""
    return re.sub(r"<[^>]*>", "\n", observation_text)


def _titles(observation_text: str) -> list[str]:
    return _RESULT_TITLE.findall(_results_body(observation_text))


class Oracle:
    """The GoG oracle; `wrong_crop_share` of gaze episodes start with a wrong crop and recover."""

    def __init__(self, wrong_crop_share: float = 0.25, gaze_config: gaze_lib.GazeConfig = gaze_lib.GazeConfig(),
                 grammar: protocol.Grammar = protocol.DEFAULT_GRAMMAR, seed: int = 0):
        self.wrong_crop_share, self.gaze_config, self.grammar, self.seed = (
            wrong_crop_share, gaze_config, grammar, seed)

    def _fmt(self, action, think: str) -> str:
        return protocol.format_action(action, think, self.grammar)

    def _box(self, episode: Episode, box) -> tuple[float, ...]:
        return gaze_lib.to_model(box, episode.question.image.shape[:2], self.gaze_config)

    def _starts_wrong(self, meta: dict[str, Any]) -> bool:
        u = zlib.crc32(f"{self.seed}/{meta['qid']}".encode()) / 2**32
        return meta["kind"] == "gaze" and u < self.wrong_crop_share

    def __call__(self, episode: Episode) -> str:
        meta = episode.meta
        if meta["kind"] == "no_search":
            think, answer = _no_search_from_meta(meta)
            return self._fmt(Answer(answer), think)
        name, attribute = meta["target_name"], meta["attribute"]
        state = _read_state(episode, name, attribute, meta["answer"])
        last_turn = episode.turn >= episode.max_turns
        if state.last is not None and state.last.get("error") and not last_turn:
            return self._retry(episode)
        if state.identified is None:
            if last_turn:
                return self._fmt(Answer(UNKNOWN), "I could not identify the emblem in time.")
            return self._identify(episode, state)
        if attribute == "name":
            return self._fmt(Answer(name), f"The result names {name}.")
        if state.fact_found:
            return self._fmt(Answer(meta["answer"]), _fact_sentence(name, attribute, meta["answer"]))
        if last_turn:
            return self._fmt(Answer(UNKNOWN), f"I know the emblem is {name} but found no {_FACT_NEEDS[attribute]}.")
        return self._fmt(Search(name), f"It is {name}; I search its {_FACT_NEEDS[attribute]}.")

    def _retry(self, episode: Episode) -> str:
        """Repeats the failed action (a tool fault, an error) with a short note."""
        previous = protocol.parse_action(episode.turns[-2].text, self.grammar)
        if isinstance(previous, (Glance, Gaze, Search)):
            return self._fmt(previous, "The search failed; I retry.")
        return self._identify(episode, _read_state(episode, None, "", ""))

    def _identify(self, episode: Episode, state: _State) -> str:
        meta = episode.meta
        target_box = self._box(episode, meta["target_box"])
        if meta["kind"] == "glance":
            if not episode.trace:
                return self._fmt(Glance(), "One emblem fills the image; I search with the whole image.")
            if target_box not in state.gazed_boxes:
                return self._fmt(Gaze(target_box), "The search did not name it; I crop the emblem.")
        ref = meta["target_ref"]
        wrong = meta["wrong"]
        if wrong is not None and self._starts_wrong(meta):
            wrong_box = self._box(episode, wrong["box"])
            if not state.gazed_boxes:
                return self._fmt(Gaze(wrong_box), f"Many emblems; I crop {ref}.")
            if state.gazed_boxes == [wrong_box]:
                return self._fmt(Gaze(target_box), f"Wrong crop: {wrong['why']}. I crop {ref}.")
        if target_box not in state.gazed_boxes:
            return self._fmt(Gaze(target_box), f"Many emblems; I crop {ref}.")
        # The right crop missed (rare): look once more with a tight box around the emblem itself.
        x1, y1, x2, y2 = target_box
        pad = round(0.1 * (x2 - x1))
        return self._fmt(Gaze((x1 + pad, y1 + pad, x2 - pad, y2 - pad)),
                         "That search did not name one organisation; I crop tighter.")


def _no_search_from_meta(meta: dict[str, Any]) -> tuple[str, str]:
    answer, attribute = meta["answer"], meta["attribute"]
    if attribute == "colour":
        return f"The emblem is {answer}.", answer
    if attribute == "shape":
        return f"The emblem is a {answer}.", answer
    return f"I count {answer} emblems.", answer


class GlanceOnlyOracle:
    """Never gazes: glance, trust the first entity the glance names, search it for the fact.

    `entity_names` are the KB's entity titles (so it can tell an entity page from a photo page).
    """

    def __init__(self, entity_names, grammar: protocol.Grammar = protocol.DEFAULT_GRAMMAR):
        self.entity_names, self.grammar = frozenset(entity_names), grammar

    def _fmt(self, action, think: str) -> str:
        return protocol.format_action(action, think, self.grammar)

    def __call__(self, episode: Episode) -> str:
        meta = episode.meta
        if meta["kind"] == "no_search":
            think, answer = _no_search_from_meta(meta)
            return self._fmt(Answer(answer), think)
        attribute = meta["attribute"]
        last_turn = episode.turn >= episode.max_turns
        glanced, name, found = False, None, None
        for i, record in enumerate(episode.trace):
            text = episode.turns[3 + 2 * i].text if 3 + 2 * i < len(episode.turns) else ""
            if record.get("error"):
                continue
            if record["action"] == "glance":
                glanced = True
                name = next((t for t in _titles(text) if t in self.entity_names), None)
            if record["action"] == "search" and name is not None:
                found = _fact_from_page(text, name, attribute)
        if episode.trace and episode.trace[-1].get("error") and not last_turn:
            previous = protocol.parse_action(episode.turns[-2].text, self.grammar)
            if isinstance(previous, (Glance, Search)):
                return self._fmt(previous, "The search failed; I retry.")
        if not glanced:
            if last_turn:
                return self._fmt(Answer(UNKNOWN), "I have no time left to search.")
            return self._fmt(Glance(), "I search with the whole image.")
        if name is None:
            return self._fmt(Answer(UNKNOWN), "The results show only pin boards; I cannot tell.")
        if attribute == "name":
            return self._fmt(Answer(name), f"The result names {name}.")
        if found is not None:
            return self._fmt(Answer(found), _fact_sentence(name, attribute, found))
        if last_turn:
            return self._fmt(Answer(UNKNOWN), "I found no answer in time.")
        return self._fmt(Search(name), f"It is {name}; I search its {_FACT_NEEDS[attribute]}.")


_PAGE_FACTS = {
    "founded": re.compile(r"founded in (\d{3,4})"),
    "city": re.compile(r" in ([^,]+), founded"),
    "founder": re.compile(r"founded in \d{3,4} by ([^.]+)\."),
}


def _fact_from_page(observation_text: str, name: str, attribute: str) -> str | None:
    """Reads `attribute` of `name` from the text-search results (the snippet of its own page)."""
    for title, snippet in _RESULT_LINE.findall(_results_body(observation_text)):
        if title == name:
            match = _PAGE_FACTS[attribute].search(snippet)
            if match:
                return match.group(1)
    return None

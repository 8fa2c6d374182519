import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gog_jax.agent import protocol
from gog_jax.agent.protocol import ActionError, Answer, Gaze, Glance, Search

G = protocol.DEFAULT_GRAMMAR
FRAGMENTS = list(G.tags) + ["[", "]", ",", " ", "1", "-3.5", "1e9", "abc", "\n", "<|im_end|>", "<", ">", "/"]

text_without_tags = st.text(min_size=1, max_size=40).map(str.strip).filter(
    lambda s: s and not any(t in s for t in G.tags) and "<|" not in s)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
actions = st.one_of(
    st.just(Glance()),
    st.tuples(finite, finite, finite, finite).map(Gaze),
    text_without_tags.map(Search),
    text_without_tags.map(Answer),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)))
def test_parse_never_raises(text):
    result = protocol.parse_action(text)
    assert isinstance(result, (Glance, Gaze, Search, Answer, ActionError))
    if isinstance(result, ActionError):
        assert result.message


@settings(max_examples=300, deadline=None)
@given(actions, st.text(max_size=40).filter(lambda s: not any(t in s for t in G.tags)))
def test_format_parse_round_trip(action, think):
    text = protocol.format_action(action, think=think)
    assert protocol.parse_action(text) == action
    assert protocol.parse_action(text + "<|im_end|>\n") == action


def test_format_is_exact():
    assert protocol.format_action(Gaze((10, 20.5, 30, 40)), think="small logo") == \
        "<think>small logo</think><gaze>[10, 20.5, 30, 40]</gaze>"
    assert protocol.format_action(Glance(), think="x") == "<think>x</think><glance/>"
    assert protocol.parse_action("  <think>a</think>\n<search> who founded Vorlak </search>  ") == \
        Search("who founded Vorlak")


@pytest.mark.parametrize("text, fragment", [
    ("<glance/>", "Start the turn with <think>"),
    ("<think>no close<glance/>", "Close your reasoning"),
    ("<think>a</think>", "No action"),
    ("<think>a</think><glance/><answer>x</answer>", "exactly one action"),
    ("<think>a</think><answer>x</answer> trailing", "exactly one action"),
    ("<think>a</think><answer>x", "Close the action with </answer>"),
    ("<think>a</think><search>  </search>", "search query is empty"),
    ("<think>a</think><answer></answer>", "answer is empty"),
    ("<think>a</think><gaze>[1, 2, 3]</gaze>", "exactly 4 numbers"),
    ("<think>a</think><gaze>[1, 2, 3, 4, 5]</gaze>", "exactly 4 numbers"),
    ("<think>a</think><gaze>[a, b, c, d]</gaze>", "4 numbers in brackets"),
    ("<think>a</think><gaze>[1e999, 0, 5, 5]</gaze>", "finite"),
    ("<think>a</think><zoom>[1,2,3,4]</zoom>", "Unknown action"),
    ("<think>a<think>b</think><glance/>", "Only one <think>"),
])
def test_errors_are_specific(text, fragment):
    result = protocol.parse_action(text)
    assert isinstance(result, ActionError)
    assert fragment in result.message


def test_gaze_numbers():
    result = protocol.parse_action("<think></think><gaze>[ -5, 2.25,+3e2 , .5 ]</gaze>")
    assert result == Gaze((-5.0, 2.25, 300.0, 0.5))
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.box)


def test_custom_grammar_everywhere():
    g = protocol.Grammar(answer_open="<final>", answer_close="</final>", require_think=False)
    assert protocol.parse_action("<final>Paris</final>", g) == Answer("Paris")
    assert protocol.format_action(Answer("Paris"), grammar=g) == "<final> Paris</final>"
    assert "</final>" in protocol.stop_strings(g)
    assert "<final>" in protocol.system_prompt(g)
    assert protocol.is_well_formed("<final>x</final>", g) and not protocol.is_well_formed("<answer>x</answer>", g)


def test_stop_strings_and_names():
    assert protocol.stop_strings() == ("<glance/>", "</gaze>", "</search>", "</answer>")
    assert [protocol.action_name(a) for a in (Glance(), Gaze((0, 0, 1, 1)), Search("q"), Answer("a"),
                                              ActionError("e"))] == ["glance", "gaze", "search", "answer", "invalid"]


def test_observation_turn_puts_crop_before_results():
    import numpy as np
    crop = np.zeros((4, 4, 3), np.uint8)
    turn = protocol.observation_turn("1. Vorlak: a firm", crop)
    assert turn.role == "user"
    assert turn.parts[0] == "<information>" and turn.parts[1] is crop
    assert turn.parts[2] == "1. Vorlak: a firm</information>"
    assert protocol.observation_turn("err").parts == ("<information>err</information>",)


def test_system_prompt_styles():
    full, brief = protocol.system_prompt(), protocol.system_prompt(style="brief")
    assert "<glance/>" in brief and len(brief) < len(full) and protocol.system_prompt(style="empty") == ""
    with pytest.raises(ValueError, match="Unknown system prompt style"):
        protocol.system_prompt(style="short")

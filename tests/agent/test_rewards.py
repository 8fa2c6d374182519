import pytest

from gog_jax.agent import rewards
from gog_jax.agent.protocol import Answer, Glance, format_action


@pytest.mark.parametrize("text, expected", [
    ("The  Eiffel-Tower!", "eiffeltower"),
    ("an Apple a day", "apple day"),
    ("  Ida   MERREN. ", "ida merren"),
    ("theatre", "theatre"),  # articles only as whole words
])
def test_normalize(text, expected):
    assert rewards.normalize_answer(text) == expected


def test_exact_match():
    assert rewards.exact_match("the Eiffel Tower", ["Eiffel tower"]) == 1.0
    assert rewards.exact_match("Eiffel", ["Eiffel tower", "Tour Eiffel"]) == 0.0
    assert rewards.exact_match("tour eiffel.", ["Eiffel tower", "Tour Eiffel"]) == 1.0
    assert rewards.exact_match(None, ["x"]) == 0.0


def test_token_f1_hand_computed():
    # pred {red, big, triangle}, gold {big, red, square}: 2 common, P = R = 2/3.
    assert rewards.token_f1("red big triangle", ["big red square"]) == pytest.approx(2 / 3)
    # pred {ida}, gold {ida, merren}: P = 1, R = 1/2, F1 = 2/3; best over golds.
    assert rewards.token_f1("Ida", ["Ida Merren", "Bob"]) == pytest.approx(2 / 3)
    # repeated tokens count with multiplicity: pred {a1 a1 b}, gold {a1 b b}: common 2, F1 = 2/3.
    assert rewards.token_f1("x x y", ["x y y"]) == pytest.approx(2 / 3)
    assert rewards.token_f1("the", ["a"]) == 1.0  # both normalise to empty
    assert rewards.token_f1("", ["Paris"]) == 0.0
    assert rewards.token_f1(None, ["Paris"]) == 0.0


def test_format_reward():
    good = [format_action(Glance(), "look"), format_action(Answer("x"), "done")]
    assert rewards.format_reward(good) == 1.0
    assert rewards.format_reward(good[:1]) == 0.0  # never answered
    assert rewards.format_reward(["<glance/>", good[1]]) == 0.0  # a malformed turn
    assert rewards.format_reward([]) == 0.0


def test_combined_reward():
    assert rewards.combine(1.0, 1.0) == pytest.approx(1.0)
    assert rewards.combine(1.0, 0.0) == pytest.approx(0.9)
    assert rewards.combine(0.0, 1.0) == pytest.approx(0.1)
    assert rewards.combine(0.5, 1.0, lam=0.2) == pytest.approx(0.6)
    texts = [format_action(Answer("Ida Merren"), "sure")]
    assert rewards.episode_reward("Ida Merren", ["ida merren"], texts) == {"reward": 1.0, "accuracy": 1.0,
                                                                            "format": 1.0}
    out = rewards.episode_reward("Ida", ["Ida Merren"], ["<answer>Ida</answer>"],
                                 accuracy=rewards.make_accuracy("f1"), lam=0.1)
    assert out == pytest.approx({"reward": 0.6, "accuracy": 2 / 3, "format": 0.0})


def test_registry():
    assert rewards.make_accuracy("exact_match") is rewards.exact_match
    assert rewards.make_accuracy("f1") is rewards.token_f1
    with pytest.raises(ValueError, match="known"):
        rewards.make_accuracy("bleu")

"""Pass rates, complexity levels and the curriculum sampler."""

import collections
import json

import pytest

from gog_jax.train.curriculum import CurriculumSampler, PassRates


def test_levels_at_the_half_boundary():
    rates = PassRates()
    rates.update("half", [1, 0])
    rates.update("third", [1, 0, 0])
    rates.update("judge_half", [0.5])
    rates.update("judge_below", [0.49])
    assert rates.rate("half") == 0.5 and rates.level("half") == "level1"
    assert rates.level("third") == "level2"
    assert rates.level("judge_half") == "level1"
    assert rates.level("judge_below") == "level2"
    assert rates.rate("never") is None and rates.level("never") is None
    assert "half" in rates and "never" not in rates and len(rates) == 4


def test_decay_arithmetic():
    decayed, cumulative = PassRates(decay=0.5), PassRates()
    for rates in (decayed, cumulative):
        rates.update("q", [1, 1, 0, 0])
        rates.update("q", [0, 0, 0, 0])
    # decay 0.5: successes 2 * 0.5 + 0 = 1, trials 4 * 0.5 + 4 = 6.
    assert decayed.rate("q") == pytest.approx(1 / 6) and decayed.level("q") == "level2"
    assert cumulative.rate("q") == 0.25
    for rates in (decayed, cumulative):
        rates.update("q", [1, 1, 1, 1])
    # successes 1 * 0.5 + 4 = 4.5, trials 6 * 0.5 + 4 = 7; cumulative 6 / 12.
    assert decayed.rate("q") == pytest.approx(4.5 / 7) and decayed.level("q") == "level1"
    assert cumulative.rate("q") == 0.5 and cumulative.level("q") == "level1"


def test_bad_updates_and_decay():
    with pytest.raises(ValueError, match="decay"):
        PassRates(decay=0.0)
    rates = PassRates()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rates.update("q", [1.5])
    with pytest.raises(ValueError, match="No accuracies"):
        rates.update("q", [])


def test_json_round_trip(tmp_path):
    rates = PassRates(decay=0.9)
    rates.update("a", [1, 0, 1])
    rates.update(7, [0.3, 0.1])
    rates.update("a", [0, 0])
    back = PassRates.from_json(rates.to_json())
    assert back.to_json() == rates.to_json()
    assert back.decay == 0.9
    assert back.rate("a") == rates.rate("a") and back.rate(7) == rates.rate(7)  # exact
    assert back.rate("7") is None  # int ids stay ints
    rates.save(tmp_path / "pass_rates.json")
    assert PassRates.load(tmp_path / "pass_rates.json").to_json() == rates.to_json()


def _pool() -> tuple[list[str], PassRates]:
    """40 level1 (rate 0.75), 40 level2 (0.25), 10 solved, 10 unsolved, 10 untried."""
    rates = PassRates()
    qids = []
    for kind, acc, count in [("easy", [1, 1, 1, 0], 40), ("hard", [1, 0, 0, 0], 40),
                             ("solved", [1, 1, 1, 1], 10), ("unsolved", [0, 0, 0, 0], 10),
                             ("untried", None, 10)]:
        for i in range(count):
            qids.append(f"{kind}{i}")
            if acc is not None:
                rates.update(qids[-1], acc)
    return qids, rates


def _kind(qid: str) -> str:
    return qid.rstrip("0123456789")


def test_sampler_respects_level_weights():
    qids, rates = _pool()
    sampler = CurriculumSampler(qids, rates, weights={"level1": 0.25, "level2": 1.0, None: 0.5},
                                skip_solved=True, seed=0)
    drawn = collections.Counter()
    for _ in range(1000):
        batch = sampler.sample(4)
        assert len(set(batch)) == 4  # without replacement within a call
        drawn.update(_kind(q) for q in batch)
    assert drawn["solved"] == 0
    assert drawn["hard"] >= 3 * drawn["easy"]
    # Unsolved questions keep the level2 weight by default: per question as often as level2.
    assert drawn["unsolved"] / 10 == pytest.approx(drawn["hard"] / 40, rel=0.15)
    assert drawn["untried"] / 10 == pytest.approx(drawn["hard"] / 40 / 2, rel=0.2)


def test_sampler_unsolved_weight_and_solved_questions():
    qids, rates = _pool()
    sampler = CurriculumSampler(qids, rates, weights={"level1": 1.0, "level2": 1.0, "untried": 0.0,
                                                      "unsolved": 0.0}, skip_solved=False, seed=1)
    drawn = collections.Counter(_kind(q) for _ in range(200) for q in sampler.sample(5))
    assert drawn["unsolved"] == drawn["untried"] == 0
    assert drawn["solved"] > 0  # solved questions count as level1 when not skipped
    with pytest.raises(ValueError, match="only 90"):
        sampler.sample(91)


def test_bad_weights():
    qids, rates = _pool()
    with pytest.raises(ValueError, match="missing"):
        CurriculumSampler(qids, rates, weights={"level1": 1.0, "level2": 1.0}, skip_solved=True, seed=0)
    with pytest.raises(ValueError, match="unknown"):
        CurriculumSampler(qids, rates, weights={"level1": 1.0, "level2": 1.0, None: 1.0, "level3": 1.0},
                          skip_solved=True, seed=0)


def test_level_counts_follow_updates():
    qids, rates = _pool()
    sampler = CurriculumSampler(qids, rates, skip_solved=True, seed=0)
    assert sampler.level_counts() == {"level1": 50, "level2": 50, "untried": 10, "solved": 10,
                                      "unsolved": 10}
    rates.update("untried0", [0, 1])  # the sampler reads pass rates live
    assert sampler.level_counts()["untried"] == 9 and sampler.level_counts()["level1"] == 51


def test_exact_resume(tmp_path):
    qids, rates = _pool()
    sampler = CurriculumSampler(qids, rates, skip_solved=True, seed=3)
    for _ in range(3):
        sampler.sample(8)
    state = json.loads(json.dumps(sampler.state_dict()))
    rates.save(tmp_path / "rates.json")
    want = [sampler.sample(8) for _ in range(3)]

    resumed = CurriculumSampler(qids, PassRates.load(tmp_path / "rates.json"), skip_solved=True, seed=99)
    resumed.load_state_dict(state)
    assert [resumed.sample(8) for _ in range(3)] == want
    assert CurriculumSampler(qids, rates, skip_solved=True, seed=3).sample(8) != want[0]

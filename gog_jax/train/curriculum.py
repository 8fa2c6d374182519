"""Complexity-adaptive curriculum: online pass rates, complexity levels, weighted sampling.

A question's level is `level1` when its pass rate is >= 50% and `level2` below (DESIGN §1).
Questions at 0% or 100% give zero-variance GRPO groups and so no gradient; the sampler can
skip the solved ones and weight the unsolved ones separately. Pass rates are re-estimated
online from the GRPO groups themselves (`PassRates.update` with each group's accuracies).
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

QuestionId = str | int  # kept as-is through JSON (stored in a list, not as object keys)
Level = str | None     # "level1", "level2", or None when never tried

LEVEL_SPLIT = 0.5
DEFAULT_WEIGHTS: dict[str | None, float] = {"level1": 0.25, "level2": 1.0, None: 0.5}


class PassRates:
    """Per-question (discounted) successes and trials.

    `decay` in (0, 1]: both counts are multiplied by it before each update, so old evidence
    fades as the policy changes (an exponential moving average with effective window
    1 / (1 - decay) trials); 1.0 keeps cumulative counts.
    """

    def __init__(self, decay: float = 1.0):
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}.")
        self.decay = decay
        self._counts: dict[QuestionId, tuple[float, float]] = {}  # qid -> (successes, trials)

    def update(self, qid: QuestionId, accuracies: Sequence[float]) -> None:
        """Adds one group's accuracies (0/1 or judge scores in [0, 1]) for `qid`."""
        acc = [float(a) for a in accuracies]
        if not acc:
            raise ValueError(f"No accuracies given for question {qid!r}.")
        if any(not 0.0 <= a <= 1.0 for a in acc):
            raise ValueError(f"Accuracies must lie in [0, 1], got {acc} for {qid!r}.")
        successes, trials = self._counts.get(qid, (0.0, 0.0))
        self._counts[qid] = (successes * self.decay + sum(acc), trials * self.decay + len(acc))

    def rate(self, qid: QuestionId) -> float | None:
        """Estimated pass rate, or None when the question was never tried."""
        if qid not in self._counts:
            return None
        successes, trials = self._counts[qid]
        return successes / trials

    def level(self, qid: QuestionId) -> Level:
        rate = self.rate(qid)
        if rate is None:
            return None
        return "level1" if rate >= LEVEL_SPLIT else "level2"

    def __contains__(self, qid: QuestionId) -> bool:
        return qid in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def to_json(self) -> str:
        entries = [[qid, s, t] for qid, (s, t) in self._counts.items()]
        return json.dumps({"decay": self.decay, "counts": entries})

    @classmethod
    def from_json(cls, text: str) -> "PassRates":
        data = json.loads(text)
        rates = cls(decay=data["decay"])
        rates._counts = {qid: (s, t) for qid, s, t in data["counts"]}
        return rates

    def save(self, path: str | Path) -> None:
        """Writes atomically (temp file + rename): a crash mid-write keeps the old file."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "PassRates":
        return cls.from_json(Path(path).read_text())


class CurriculumSampler:
    """Draws training questions weighted by their current complexity level.

    `weights` maps a level to a sampling weight: "level1", "level2", and None (or "untried",
    the config-friendly spelling, since ml-collections keys are strings) for questions never
    tried. Two refinements, because 0% and 100% questions carry no GRPO signal:
    - "unsolved" (optional; default: the level2 weight): weight of questions at rate 0.0,
      so a run can down-weight questions the policy cannot yet solve at all;
    - `skip_solved`: questions at rate 1.0 get weight 0.
    The sampler reads `pass_rates` live, so updates made by the trainer take effect at the
    next draw. Its only own state is the random generator (`state_dict`).
    """

    def __init__(self, qids: Sequence[QuestionId], pass_rates: PassRates, *,
                 weights: Mapping[str | None, float] = DEFAULT_WEIGHTS, skip_solved: bool = True,
                 seed: int = 0):
        if len(set(qids)) != len(qids):
            raise ValueError("Question ids must be unique.")
        weights = dict(weights)
        if "untried" in weights:
            weights[None] = weights.pop("untried")
        unknown = set(weights) - {"level1", "level2", "unsolved", None}
        missing = {"level1", "level2", None} - set(weights)
        if unknown or missing:
            raise ValueError(f"Bad curriculum weights: unknown {unknown}, missing {missing}.")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"Weights must be nonnegative, got {weights}.")
        weights.setdefault("unsolved", weights["level2"])
        self.qids = list(qids)
        self.pass_rates = pass_rates
        self.weights = weights
        self.skip_solved = skip_solved
        self._rng = np.random.default_rng(seed)

    def _weight(self, qid: QuestionId) -> float:
        rate = self.pass_rates.rate(qid)
        if rate == 1.0 and self.skip_solved:
            return 0.0
        if rate == 0.0:
            return self.weights["unsolved"]
        return self.weights[self.pass_rates.level(qid)]

    def sample(self, n: int) -> list[QuestionId]:
        """n distinct questions, drawn with probability proportional to their weights."""
        w = np.array([self._weight(q) for q in self.qids], np.float64)
        available = int(np.count_nonzero(w))
        if n > available:
            raise ValueError(f"Asked for {n} questions but only {available} have nonzero weight.")
        picks = self._rng.choice(len(self.qids), size=n, replace=False, p=w / w.sum())
        return [self.qids[i] for i in picks]

    def level_counts(self) -> dict[str, int]:
        """Questions per level for logging; solved (rate 1) are within level1, unsolved
        (rate 0) within level2."""
        counts = {"level1": 0, "level2": 0, "untried": 0, "solved": 0, "unsolved": 0}
        for qid in self.qids:
            rate = self.pass_rates.rate(qid)
            counts[self.pass_rates.level(qid) or "untried"] += 1
            counts["solved"] += rate == 1.0
            counts["unsolved"] += rate == 0.0
        return counts

    def state_dict(self) -> dict:
        """JSON-serialisable generator state; with the saved PassRates it resumes exactly."""
        return {"bit_generator": self._rng.bit_generator.state}

    def load_state_dict(self, state: Mapping) -> None:
        self._rng.bit_generator.state = state["bit_generator"]

"""Episode rewards: r = (1 - λ)·r_acc + λ·r_fmt (MMSearch-R1's form, λ = 0.1 by default).

Accuracy judges are pure functions `(prediction, golds, question) -> [0, 1]` chosen by name
from a registry of factories, so a config string selects exact match, token F1 or an LLM
judge (`judge.py`) without code changes.
"""

import collections
import re
import string
from collections.abc import Callable, Sequence

from gog_jax.agent import protocol

Accuracy = Callable[[str | None, Sequence[str], str], float]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str | None, golds: Sequence[str], question: str = "") -> float:
    """1.0 if the normalised prediction equals any normalised gold answer."""
    del question
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def token_f1(prediction: str | None, golds: Sequence[str], question: str = "") -> float:
    """Best bag-of-tokens F1 between the normalised prediction and any gold answer (SQuAD)."""
    del question
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize_answer(gold).split()
        if not pred or not ref:
            best = max(best, float(pred == ref))
            continue
        common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def format_reward(assistant_texts: Sequence[str], grammar: protocol.Grammar = protocol.DEFAULT_GRAMMAR) -> float:
    """1.0 if every assistant turn is well-formed and the last one answers, else 0.0."""
    if not assistant_texts:
        return 0.0
    actions = [protocol.parse_action(t, grammar) for t in assistant_texts]
    ok = all(not isinstance(a, protocol.ActionError) for a in actions)
    return float(ok and isinstance(actions[-1], protocol.Answer))


def combine(r_acc: float, r_fmt: float, lam: float = 0.1) -> float:
    """(1 - λ)·r_acc + λ·r_fmt."""
    return (1.0 - lam) * r_acc + lam * r_fmt


def _llm_judge(**kwargs) -> Accuracy:
    from gog_jax.agent.judge import LLMJudge  # pylint: disable=import-outside-toplevel  # urllib/sqlite only when used
    return LLMJudge(**kwargs).accuracy


ACCURACY_FACTORIES: dict[str, Callable[..., Accuracy]] = {
    "exact_match": lambda: exact_match,
    "f1": lambda: token_f1,
    "llm_judge": _llm_judge,
}


def make_accuracy(name: str, **kwargs) -> Accuracy:
    """The accuracy judge registered under `name`, built with `kwargs` (e.g. the judge's URL)."""
    if name not in ACCURACY_FACTORIES:
        raise ValueError(f"Unknown accuracy {name!r}; known: {sorted(ACCURACY_FACTORIES)}.")
    return ACCURACY_FACTORIES[name](**kwargs)


def episode_reward(prediction: str | None, golds: Sequence[str], assistant_texts: Sequence[str],
                   accuracy: Accuracy = exact_match, question: str = "", lam: float = 0.1,
                   grammar: protocol.Grammar = protocol.DEFAULT_GRAMMAR) -> dict[str, float]:
    """{'reward', 'accuracy', 'format'} of one finished episode."""
    r_acc = float(accuracy(prediction, golds, question))
    r_fmt = format_reward(assistant_texts, grammar)
    return {"reward": combine(r_acc, r_fmt, lam), "accuracy": r_acc, "format": r_fmt}

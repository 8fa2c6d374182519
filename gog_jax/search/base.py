"""The one search interface every backend implements, its result type and its error type.

A backend sees only what the model chose to search with -- an image (the whole image or a
crop) or the model's own text query -- never the question or its kind. That keeps the
synthetic world honest: a glance fails on a cluttered scene because of what the pixels embed
to, not because a backend knows which answer it should withhold.
"""

import abc
import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """One ranked hit. `thumbnail` is an image id or path (never pixels), when the hit has one."""

    title: str
    snippet: str
    source_id: str
    score: float
    thumbnail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `from_dict(to_dict(r)) == r` for a float score (a NumPy scalar becomes float)."""
        return {**dataclasses.asdict(self), "score": float(self.score)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchResult":
        return cls(str(d["title"]), str(d["snippet"]), str(d["source_id"]), float(d["score"]), d.get("thumbnail"))


class SearchError(Exception):
    """A tool failure (timeout, HTTP error, malformed response, bad input): the environment turns
    it into an error observation, so it is the only exception a backend lets out."""


class SearchBackend(abc.ABC):
    """Image search and text search, each returning at most `k` results, best first."""

    @property
    def identifier(self) -> str:
        """Names what answers the queries (for cache keys): same identifier, same answers.
        Never contains a secret."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    @abc.abstractmethod
    def image_search(self, image: np.ndarray, k: int) -> list[SearchResult]:
        """Results for a uint8 RGB image [H, W, 3]."""

    @abc.abstractmethod
    def text_search(self, query: str, k: int) -> list[SearchResult]:
        """Results for a free-text query."""


def make_snippet(text: str, max_chars: int) -> str:
    """The text's first `max_chars` characters, cut back to a word boundary when it is longer."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut) + "…"


def check_image(image: Any) -> np.ndarray:
    """The image as a C-contiguous uint8 [H, W, 3] array, or SearchError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise SearchError(f"image search needs a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise SearchError(f"image search needs an RGB image [H, W, 3], got shape {image.shape}")
    if image.dtype != np.uint8:
        raise SearchError(f"image search needs uint8 pixels, got {image.dtype}")
    return np.ascontiguousarray(image)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SearchError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_query(query: Any) -> str:
    if not isinstance(query, str):
        raise SearchError(f"text search needs a string query, got {type(query).__name__}")
    return query

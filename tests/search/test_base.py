"""The interface: result round trip, input checks, and the honesty rule (signatures)."""

import inspect

import numpy as np
import pytest

from gog_jax.search import CachedBackend, LocalIndex, SearchBackend, SearchError, SearchResult, WebSearchBackend
from gog_jax.search.base import check_image, check_k, make_snippet


def test_result_dict_round_trip():
    r = SearchResult("T", "S", "id", np.float32(0.1), "img.png")
    d = r.to_dict()
    assert d == {"title": "T", "snippet": "S", "source_id": "id", "score": float(np.float32(0.1)),
                 "thumbnail": "img.png"}
    assert type(d["score"]) is float and SearchResult.from_dict(d) == r
    assert SearchResult.from_dict({"title": "T", "snippet": "", "source_id": "x", "score": 1}).thumbnail is None


@pytest.mark.parametrize("backend", [SearchBackend, LocalIndex, WebSearchBackend, CachedBackend])
def test_backends_see_only_the_image_or_the_query_and_k(backend):
    """The honesty rule: no parameter through which the question or its kind could arrive."""
    assert list(inspect.signature(backend.image_search).parameters) == ["self", "image", "k"]
    assert list(inspect.signature(backend.text_search).parameters) == ["self", "query", "k"]


def test_input_checks():
    image = np.zeros((3, 4, 3), np.uint8)
    assert check_image(image) is image
    assert check_image(image[:, ::-1]).flags.c_contiguous
    for bad, match in [((np.zeros((3, 4, 3), np.float64)), "uint8"), (np.zeros((3, 4)), r"\[H, W, 3\]"),
                       (np.zeros((3, 0, 3), np.uint8), r"\[H, W, 3\]"), ("a.png", "numpy array")]:
        with pytest.raises(SearchError, match=match):
            check_image(bad)
    assert check_k(np.int64(3)) == 3
    for bad in (0, -2, 1.0, True, "3", None):
        with pytest.raises(SearchError, match="positive integer"):
            check_k(bad)


def test_make_snippet_cuts_at_a_word_boundary():
    assert make_snippet("short  text\nhere", 50) == "short text here"
    assert make_snippet("one two three four", 12) == "one two…"
    assert make_snippet("x" * 30, 10) == "x" * 10 + "…"

"""CachedBackend: replay without a second request, key normalisation, failures, threads."""

from concurrent.futures import ThreadPoolExecutor
import sqlite3
import threading
import time

import numpy as np
import pytest

from gog_jax.search import CachedBackend, LocalIndex, Record, SearchBackend, SearchError, SearchResult
from gog_jax.search import WebSearchBackend, WebSearchConfig, normalise_query
from tests.search.conftest import GLYPHS, organic, reference_image


class Counting(SearchBackend):
    """Answers with results that encode the call; counts calls; can fail or be slow."""

    def __init__(self, fail: int = 0, delay: float = 0.0, name: str = "counting"):
        self.calls, self.fail, self.delay, self.name = [], fail, delay, name
        self.lock = threading.Lock()

    @property
    def identifier(self) -> str:
        return self.name

    def _answer(self, what: str, k: int) -> list[SearchResult]:
        with self.lock:
            self.calls.append(what)
            n = len(self.calls)
        time.sleep(self.delay)
        if n <= self.fail:
            raise SearchError(f"transient failure {n}")
        return [SearchResult(f"{what} #{i}", "snippet", f"id-{i}", 1.0 / 3 + i, None if i else "t.png")
                for i in range(k)]

    def image_search(self, image, k):
        return self._answer(f"image{image.shape}", k)

    def text_search(self, query, k):
        return self._answer(query, k)


def test_normalise_query():
    assert normalise_query("  Eiffel\tTOWER \n paris ") == "eiffel tower paris"
    assert normalise_query("ｅｉｆｆｅｌ") == "eiffel"  # NFKC: full-width letters


def test_text_replay_is_exact_and_normalised_queries_share(tmp_path):
    inner = Counting()
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    first = cache.text_search("Eiffel  Tower", k=3)
    assert cache.text_search("eiffel tower", k=3) == first
    assert cache.text_search(" EIFFEL\nTOWER ", k=3) == first
    assert inner.calls == ["Eiffel  Tower"]
    assert first[0].score == 1.0 / 3  # floats survive the JSON round trip bit for bit
    cache.text_search("eiffel tower", k=4)  # k is part of the key
    cache.text_search("eiffel towers", k=3)
    assert len(inner.calls) == 3 and (cache.hits, cache.misses) == (2, 3)


def test_persists_across_instances(tmp_path):
    path = str(tmp_path / "c.sqlite")
    image = reference_image(GLYPHS[3])
    a = CachedBackend(Counting(), path)
    expected = a.image_search(image, k=2), a.text_search("q", k=2)
    a.close()
    inner = Counting()
    b = CachedBackend(inner, path)
    assert (b.image_search(image.copy(), k=2), b.text_search("q", k=2)) == expected
    assert inner.calls == []
    # a different backend identifier does not see those rows
    other = Counting(name="other")
    CachedBackend(other, path).text_search("q", k=2)
    assert other.calls == ["q"]


def test_image_key_is_content_and_shape(tmp_path):
    inner = Counting()
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    image = np.arange(2 * 6 * 3, dtype=np.uint8).reshape(2, 6, 3)
    cache.image_search(image, k=1)
    cache.image_search(np.ascontiguousarray(image[:, ::-1][:, ::-1]), k=1)  # same pixels, another array
    assert len(inner.calls) == 1
    cache.image_search(image.reshape(6, 2, 3), k=1)  # same bytes, other shape
    changed = image.copy()
    changed[0, 0, 0] += 1
    cache.image_search(changed, k=1)
    assert len(inner.calls) == 3


def test_errors_are_not_cached_by_default(tmp_path):
    inner = Counting(fail=1)
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    with pytest.raises(SearchError, match="transient failure 1"):
        cache.text_search("q", k=1)
    assert cache.text_search("q", k=1)[0].title == "q #0"
    assert cache.text_search("q", k=1)[0].title == "q #0"
    assert len(inner.calls) == 2


def test_record_failures_replays_the_same_error(tmp_path):
    inner = Counting(fail=1)
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"), record_failures=True)
    for _ in range(3):
        with pytest.raises(SearchError, match="^transient failure 1$"):
            cache.text_search("q", k=1)
    assert len(inner.calls) == 1


def test_bad_input_never_reaches_the_backend(tmp_path):
    inner = Counting()
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    with pytest.raises(SearchError):
        cache.image_search(np.zeros((2, 2, 4), np.uint8), k=1)
    with pytest.raises(SearchError):
        cache.text_search("q", k=0)
    assert inner.calls == []


def test_rows_hold_results_as_json(tmp_path):
    path = str(tmp_path / "c.sqlite")
    cache = CachedBackend(Counting(), path)
    cache.text_search("Hello  World", k=1)
    cache.image_search(np.zeros((4, 5, 3), np.uint8), k=1)
    cache.close()
    rows = sqlite3.connect(path).execute("SELECT backend, kind, query, k, results, error FROM searches ORDER BY kind").fetchall()
    assert [r[:4] for r in rows] == [("counting", "image", "image[4, 5, 3]", 1), ("counting", "text", "hello world", 1)]
    assert '"title": "Hello  World #0"' in rows[1][4] and rows[1][5] is None


def test_thread_pool_identical_searches_make_one_call(tmp_path):
    """8 rollouts of one question glancing at once: one backend call, 8 equal answers."""
    inner = Counting(delay=0.05)
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: cache.text_search("same query", k=2), range(8)))
    assert len(inner.calls) == 1 and all(a == answers[0] for a in answers)


def test_thread_pool_mixed_searches(tmp_path):
    inner = Counting()
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    queries = [f"query {i % 25}" for i in range(200)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: cache.text_search(q, k=2), queries))
    assert sorted(set(inner.calls)) == sorted(set(queries)) and len(inner.calls) == 25
    assert all(a[0].title == f"{q} #0" for q, a in zip(queries, answers))
    assert cache.misses == 25


def test_waiters_share_the_leaders_failure(tmp_path):
    inner = Counting(fail=1, delay=0.05)
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(cache.text_search, "q", 1) for _ in range(4)]
    assert all(isinstance(f.exception(), SearchError) for f in futures)
    assert len(inner.calls) == 1
    assert cache.text_search("q", k=1)[0].title == "q #0"  # not cached: the next call retries


def test_cached_web_query_makes_no_second_request(server, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_SEARCH_KEY", "k-123")
    server.handler = lambda r: (200, organic(("Mill", "https://mill", "a mill")), 0.0)
    web = WebSearchBackend.from_env(WebSearchConfig(base_url=server.url), "TEST_SEARCH_KEY")
    cache = CachedBackend(web, str(tmp_path / "c.sqlite"))
    image = reference_image(GLYPHS[0])
    first = cache.text_search("velmora mill", k=3), cache.image_search(image, k=3)
    assert server.count() == 2
    assert (cache.text_search("Velmora   MILL", k=3), cache.image_search(image, k=3)) == first
    assert server.count() == 2


def test_wraps_a_local_index(tmp_path):
    index = LocalIndex([Record("a", "Alpha", "alpha river", reference_image(GLYPHS[0])),
                        Record("b", "Beta", "beta river", reference_image(GLYPHS[50]))])
    cache = CachedBackend(index, str(tmp_path / "c.sqlite"))
    assert cache.identifier == index.identifier
    assert cache.image_search(reference_image(GLYPHS[50]), k=2) == index.image_search(reference_image(GLYPHS[50]), k=2)
    assert cache.text_search("river alpha", k=2) == index.text_search("river alpha", k=2)
    assert cache.text_search("river alpha", k=2) == index.text_search("river alpha", k=2)
    assert cache.hits == 1


def test_a_broken_cache_is_a_search_error_and_frees_waiters(tmp_path):
    inner = Counting(delay=0.05)
    cache = CachedBackend(inner, str(tmp_path / "c.sqlite"))
    cache.text_search("warm", k=1)
    # writes fail from now on (a full disk, say); reads still work
    cache._db.execute("CREATE TRIGGER full BEFORE INSERT ON searches BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(cache.text_search, "q", 1) for _ in range(3)]
    assert all(isinstance(f.exception(timeout=5), SearchError) for f in futures)
    assert "search cache" in str(futures[0].exception()) and "disk full" in str(futures[0].exception())
    assert inner.calls == ["warm", "q"]  # the waiters shared the leader's failure
    assert cache.text_search("warm", k=1)[0].title == "warm #0"

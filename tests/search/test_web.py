"""WebSearchBackend against a scripted HTTP server on 127.0.0.1: requests, parsing, retries,
timeouts, errors, and that the API key leaks nowhere."""

import base64
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from gog_jax.search import SearchError, SearchResult, WebSearchBackend, WebSearchConfig
from tests.search.conftest import organic

KEY = "sk-test-5ecret-KEY-0123456789"


@pytest.fixture
def env_key(monkeypatch):
    monkeypatch.setenv("TEST_SEARCH_KEY", KEY)


def make_backend(server, sleeps=None, **overrides) -> WebSearchBackend:
    config = WebSearchConfig(base_url=server.url, timeout_s=2.0, backoff_s=0.01, max_retries=2, **overrides)
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return WebSearchBackend.from_env(config, "TEST_SEARCH_KEY", sleep=sleep)


def test_text_search_happy_path(server, env_key):
    server.handler = lambda r: (200, organic(("Velmora Mill", "https://a.example/mill", "A mill on the river."),
                                             ("River", "https://b.example/river", "")), 0.0)
    results = make_backend(server).text_search("velmora mill", k=5)
    assert results == [SearchResult("Velmora Mill", "A mill on the river.", "https://a.example/mill", 1.0),
                       SearchResult("River", "", "https://b.example/river", 0.5)]
    (request,) = server.requests
    assert request["method"] == "POST" and request["path"] == "/search"
    assert json.loads(request["body"]) == {"q": "velmora mill", "num": 5}
    assert {k.lower(): v for k, v in request["headers"].items()}["x-api-key"] == KEY


def test_k_truncates(server, env_key):
    server.handler = lambda r: (200, organic(*[(f"t{i}", f"https://x/{i}", "") for i in range(10)]), 0.0)
    assert [r.title for r in make_backend(server).text_search("q", k=3)] == ["t0", "t1", "t2"]


def test_image_search_uploads_png_base64(server, env_key):
    server.handler = lambda r: (200, json.dumps({"organic": [{"title": "Emblem", "link": "https://e/1",
                                                              "imageUrl": "https://e/1.png"}]}).encode(), 0.0)
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), np.uint8)
    (hit,) = make_backend(server).image_search(image, k=3)
    assert hit == SearchResult("Emblem", "", "https://e/1", 1.0, "https://e/1.png")
    sent = json.loads(server.requests[0]["body"])
    assert server.requests[0]["path"] == "/lens"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(sent["image"])))), image)


def test_image_search_by_url(server, env_key):
    server.handler = lambda r: (200, organic(("t", "https://l", "s")), 0.0)
    uploaded = []
    backend = WebSearchBackend.from_env(WebSearchConfig(base_url=server.url, image_mode="url"), "TEST_SEARCH_KEY",
                                        upload_image=lambda png: uploaded.append(png) or "https://cdn/x.png")
    backend.image_search(np.zeros((4, 4, 3), np.uint8), k=1)
    assert json.loads(server.requests[0]["body"]) == {"url": "https://cdn/x.png"}
    assert uploaded[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_upload_is_search_error(server, env_key):
    def upload(png):
        raise OSError("bucket unreachable")
    backend = WebSearchBackend.from_env(WebSearchConfig(base_url=server.url, image_mode="url"), "TEST_SEARCH_KEY",
                                        upload_image=upload)
    with pytest.raises(SearchError, match="image upload failed .OSError: bucket unreachable"):
        backend.image_search(np.zeros((4, 4, 3), np.uint8), k=1)
    assert server.count() == 0


def test_identifier_ignores_transport_settings(env_key):
    a = WebSearchBackend.from_env(WebSearchConfig(timeout_s=1, max_retries=0), "TEST_SEARCH_KEY")
    b = WebSearchBackend.from_env(WebSearchConfig(timeout_s=9, seed=3), "TEST_SEARCH_KEY")
    c = WebSearchBackend.from_env(WebSearchConfig(results_key="images"), "TEST_SEARCH_KEY")
    assert a.identifier == b.identifier != c.identifier


def test_reader_fills_snippets_and_tolerates_a_dead_page(server, env_key):
    def handler(r):
        if r["path"].startswith("/reader/"):
            if r["path"].endswith("dead"):
                return 404, b"gone", 0.0
            return 200, ("Page text of " + r["path"][len("/reader/"):] + ". " + "More. " * 100).encode(), 0.0
        return 200, organic(("A", "https://a.example/page", "api snippet a"), ("B", "https://b.example/dead", "api b")), 0.0
    server.handler = handler
    backend = make_backend(server, reader_url=server.url + "/reader", snippet_chars=40)
    a, b = backend.text_search("q", k=2)
    assert a.snippet.startswith("Page text of https://a.example/page.") and len(a.snippet) <= 41
    assert b.snippet == "api b"
    assert all(KEY not in r["headers"].values() for r in server.requests if r["path"].startswith("/reader/"))


def test_500_then_success_is_retried_with_seeded_backoff(server, env_key):
    server.handler = lambda r: (500, b"oops", 0.0) if r["n"] == 1 else (200, organic(("ok", "https://ok", "")), 0.0)
    sleeps = []
    assert make_backend(server, sleeps).text_search("q", k=1)[0].title == "ok"
    assert server.count() == 2
    assert len(sleeps) == 1 and 0.01 <= sleeps[0] < 0.015  # backoff_s * (1 + 0.5 * U[0, 1))
    other = []
    server.handler = lambda r: (500, b"oops", 0.0) if r["n"] == 3 else (200, organic(("ok", "https://ok", "")), 0.0)
    make_backend(server, other).text_search("q", k=1)
    assert other == sleeps  # same seed, same jitter


def test_429_is_retried_until_gave_up_with_exponential_backoff(server, env_key):
    server.handler = lambda r: (429, b"slow down", 0.0)
    sleeps = []
    with pytest.raises(SearchError, match=r"HTTP 429.*gave up after 3 attempts"):
        make_backend(server, sleeps).text_search("q", k=1)
    assert server.count() == 3
    assert 0.01 <= sleeps[0] < 0.015 and 0.02 <= sleeps[1] < 0.03


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_4xx_is_not_retried(server, env_key, status):
    server.handler = lambda r: (status, b"no", 0.0)
    with pytest.raises(SearchError, match=f"HTTP {status}.*not retried"):
        make_backend(server).text_search("q", k=1)
    assert server.count() == 1


def test_timeout_retried_then_search_error(server, env_key):
    server.handler = lambda r: (200, organic(("late", "https://late", "")), 0.6)
    config = WebSearchConfig(base_url=server.url, timeout_s=0.15, backoff_s=0.0, max_retries=1)
    backend = WebSearchBackend.from_env(config, "TEST_SEARCH_KEY")
    with pytest.raises(SearchError, match=r"/search: timed out after 0.15 s; gave up after 2 attempts"):
        backend.text_search("q", k=1)
    assert server.count() == 2


def test_connection_refused_becomes_search_error(env_key):
    config = WebSearchConfig(base_url="http://127.0.0.1:9", timeout_s=0.5, backoff_s=0.0, max_retries=1)
    with pytest.raises(SearchError, match="connection failed"):
        WebSearchBackend.from_env(config, "TEST_SEARCH_KEY").text_search("q", k=1)


@pytest.mark.parametrize("body, match", [
    (b"<html>not json</html>", "malformed JSON"),
    (b"\xff\xfe\x00", "malformed JSON"),
    (b"[1, 2]", "no 'organic' list"),
    (b'{"organic": {"title": "x"}}', "no 'organic' list"),
    (b'{"organic": [{"title": "x"}]}', "result 1 lacks"),
    (b'{"organic": ["x"]}', "result 1 lacks"),
])
def test_malformed_responses_become_search_error(server, env_key, body, match):
    server.handler = lambda r: (200, body, 0.0)
    with pytest.raises(SearchError, match=match):
        make_backend(server).text_search("q", k=1)
    assert server.count() == 1  # a malformed answer is not retried: it would come back the same


def test_no_results_key_means_no_results(server, env_key):
    server.handler = lambda r: (200, b'{"searchParameters": {}}', 0.0)
    assert make_backend(server).text_search("q", k=3) == []


def test_missing_key_fails_naming_the_variable(monkeypatch):
    monkeypatch.delenv("TEST_SEARCH_KEY", raising=False)
    with pytest.raises(SearchError, match="TEST_SEARCH_KEY is not set"):
        WebSearchBackend.from_env(WebSearchConfig(), "TEST_SEARCH_KEY")


def test_bad_inputs(server, env_key):
    backend = make_backend(server)
    with pytest.raises(SearchError):
        backend.image_search(np.zeros((4, 4), np.uint8), k=1)
    with pytest.raises(SearchError):
        backend.text_search("q", k=0)
    assert server.count() == 0


def test_api_key_leaks_nowhere(server, env_key, caplog, tmp_path):
    """Not in logs (retries and reader failures log), exception messages, reprs, identifiers or
    cache rows -- even when the server echoes the key back in its error reason."""
    from gog_jax.search import CachedBackend

    def handler(r):
        if r["path"].startswith("/reader/"):
            return 503, b"", 0.0
        if r["n"] % 3 == 1:
            return 500, KEY.encode(), 0.0, f"bad key {KEY}"
        return 200, organic(("t", "https://t", "s")), 0.0
    server.handler = handler
    caplog.set_level(logging.DEBUG)
    backend = make_backend(server, reader_url=server.url + "/reader")
    cache = CachedBackend(backend, str(tmp_path / "c.sqlite"), record_failures=True)
    cache.text_search("q", k=1)
    messages = []
    server.handler = lambda r: (400, b"", 0.0, f"invalid key {KEY}")
    for call in (lambda: cache.text_search("other", k=1), lambda: cache.image_search(np.zeros((3, 3, 3), np.uint8), 1)):
        with pytest.raises(SearchError) as info:
            call()
        messages.append(str(info.value))
    cache.close()
    assert server.count() >= 4 and any("retry" in m for m in caplog.messages)
    texts = [*caplog.messages, *(r.getMessage() for r in caplog.records), *messages, repr(backend), repr(cache),
             repr(backend.config), repr(vars(backend)), backend.identifier, cache.identifier]
    assert not [t for t in texts if KEY in t]
    assert any("[REDACTED]" in t for t in caplog.messages) and "invalid key [REDACTED]" in messages[0]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert KEY.encode() not in raw and b"5ecret" not in raw

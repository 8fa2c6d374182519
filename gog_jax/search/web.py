"""`WebSearchBackend`: a commercial search API over HTTP (Serper / SerpAPI-style JSON).

Standard library only (urllib), so the package gains no HTTP dependency. What it guarantees:
- the API key is read from an environment variable once, in `from_env`, sent only in a request
  header, and kept out of reprs, logs, exception messages and `identifier` (cache keys);
- each request has a timeout; timeouts, connection failures, HTTP 429 and 5xx are retried with
  exponential backoff and jitter from a seeded RNG (reproducible waits); other 4xx are not
  retried (the request itself is wrong: retrying would only pay again);
- every failure leaves as `SearchError` with the endpoint, status and attempt count.
Thread-safe (one urllib request per call); under concurrent use the jitter draws interleave,
so waits are reproducible only for a sequential caller.

Requests (JSON POST bodies; field names configurable):
  image search  {image_field: base64 PNG}          in image_mode "base64"
                {url_field: upload_image(png)}     in image_mode "url" (the caller's uploader)
  text search   {query_field: query, count_field: k}
Responses: a JSON object whose `results_key` list holds items with title / link / snippet
(keys configurable). Scores are 1 / rank (a web API ranks but does not score). With a
`reader_url`, a result's snippet is replaced by the start of its page text from
`GET {reader_url}/{link}` (a Jina-style reader); a page the reader cannot fetch keeps the API's
snippet, so one dead link does not fail the search.
"""

from collections.abc import Callable
import base64
import dataclasses
import http.client
import io
import json
import logging
import os
import random
import socket
import threading
import time
from typing import Any
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from gog_jax.search.base import (SearchBackend, SearchError, SearchResult, check_image, check_k, check_query,
                                 make_snippet)

logger = logging.getLogger(__name__)

_TRANSPORT_FIELDS = frozenset({"timeout_s", "max_retries", "backoff_s", "backoff_max_s", "jitter", "seed",
                               "max_response_bytes"})


class _Secret:
    """Holds the API key; its repr is masked, so a debugger, `vars()` or a traceback's locals
    show no key."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "_Secret('***')"


class _Transient(Exception):
    """A failure that a retry may fix (timeout, connection error, HTTP 429/5xx)."""


@dataclasses.dataclass(frozen=True)
class WebSearchConfig:
    """Where and how to call the API. Holds no secret: it is safe to log and to hash."""

    base_url: str = "https://google.serper.dev"
    image_endpoint: str = "/lens"
    text_endpoint: str = "/search"
    image_mode: str = "base64"  # "base64" | "url"
    image_field: str = "image"
    url_field: str = "url"
    query_field: str = "q"
    count_field: str = "num"
    results_key: str = "organic"
    title_key: str = "title"
    link_key: str = "link"
    snippet_key: str = "snippet"
    thumbnail_key: str = "imageUrl"
    api_key_header: str = "X-API-KEY"
    api_key_prefix: str = ""  # e.g. "Bearer " for an Authorization header
    timeout_s: float = 10.0
    max_retries: int = 3  # retries after the first attempt
    backoff_s: float = 0.5  # first wait; doubles each retry
    backoff_max_s: float = 8.0
    jitter: float = 0.5  # each wait is multiplied by 1 + jitter * U[0, 1)
    seed: int = 0
    max_response_bytes: int = 8 << 20  # a reader page can be huge; the snippet needs its start
    reader_url: str | None = None
    snippet_chars: int = 300


class WebSearchBackend(SearchBackend):
    """Calls the API described by a `WebSearchConfig`. Build it with `from_env`."""

    def __init__(self, config: WebSearchConfig, api_key: str, *,
                 upload_image: Callable[[bytes], str] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        """`upload_image`: PNG bytes -> a public URL (needed in image_mode "url");
        `sleep`: injectable for tests."""
        if config.image_mode not in ("base64", "url"):
            raise ValueError(f"image_mode must be 'base64' or 'url', got {config.image_mode!r}")
        if config.image_mode == "url" and upload_image is None:
            raise ValueError("image_mode 'url' needs an upload_image function")
        self.config = config
        self._api_key = _Secret(api_key)
        self._upload_image = upload_image
        self._sleep = sleep
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()

    @classmethod
    def from_env(cls, config: WebSearchConfig, api_key_env: str = "SERPER_API_KEY", **kwargs) -> "WebSearchBackend":
        """Resolves the key from the environment variable named `api_key_env`, once."""
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise SearchError(f"environment variable {api_key_env} is not set (it should hold the search API key)")
        return cls(config, api_key, **kwargs)

    def __repr__(self) -> str:
        return f"WebSearchBackend({self.config!r})"

    @property
    def identifier(self) -> str:
        """The config fields that shape answers (not timeouts or retries); no key."""
        fields = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in _TRANSPORT_FIELDS}
        return "web:" + json.dumps(fields, sort_keys=True)

    # ----------------------------------------------------------------------------- search

    def image_search(self, image: np.ndarray, k: int) -> list[SearchResult]:
        image, k = check_image(image), check_k(k)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        png = buffer.getvalue()
        c = self.config
        if c.image_mode == "base64":
            body = {c.image_field: base64.b64encode(png).decode("ascii")}
        else:
            try:
                body = {c.url_field: self._upload_image(png)}
            except Exception as error:  # the caller's uploader: any failure is a tool failure
                raise SearchError(self._redact(f"image upload failed ({type(error).__name__}: {error})")) from None
        return self._search(c.image_endpoint, body, k)

    def text_search(self, query: str, k: int) -> list[SearchResult]:
        query, k = check_query(query), check_k(k)
        return self._search(self.config.text_endpoint, {self.config.query_field: query, self.config.count_field: k}, k)

    def _search(self, endpoint: str, body: dict[str, Any], k: int) -> list[SearchResult]:
        c = self.config
        headers = {"Content-Type": "application/json", c.api_key_header: c.api_key_prefix + self._api_key.value}
        raw = self._fetch(c.base_url.rstrip("/") + endpoint, json.dumps(body).encode(), headers, endpoint)
        results = self._parse(raw, endpoint)[:k]
        if c.reader_url:
            results = [dataclasses.replace(r, snippet=self._page_text(r.source_id) or r.snippet) for r in results]
        return results

    def _parse(self, raw: bytes, endpoint: str) -> list[SearchResult]:
        c = self.config
        try:
            payload = json.loads(raw)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise SearchError(self._redact(f"{endpoint}: malformed JSON response ({error})")) from None
        items = payload.get(c.results_key, []) if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise SearchError(f"{endpoint}: response has no '{c.results_key}' list")
        results = []
        for rank, item in enumerate(items, 1):
            if not (isinstance(item, dict) and isinstance(item.get(c.title_key), str)
                    and isinstance(item.get(c.link_key), str)):
                raise SearchError(f"{endpoint}: result {rank} lacks a string '{c.title_key}' or '{c.link_key}'")
            thumbnail = item.get(c.thumbnail_key)
            results.append(SearchResult(item[c.title_key], make_snippet(str(item.get(c.snippet_key) or ""), c.snippet_chars),
                                        item[c.link_key], 1.0 / rank, thumbnail if isinstance(thumbnail, str) else None))
        return results

    def _page_text(self, link: str) -> str:
        """The start of the page's text from the reader, or "" when the reader fails."""
        try:
            raw = self._fetch(f"{self.config.reader_url.rstrip('/')}/{link}", None, {}, "reader")
        except SearchError as error:
            logger.warning("reader failed, keeping the API snippet: %s", error)
            return ""
        return make_snippet(raw.decode("utf-8", errors="replace"), self.config.snippet_chars)

    # ----------------------------------------------------------------------------- HTTP

    def _fetch(self, url: str, data: bytes | None, headers: dict[str, str], what: str) -> bytes:
        """The response body, retrying transient failures; SearchError after the last attempt.
        `what` names the call in messages and logs (never the URL's query or the headers)."""
        c = self.config
        for attempt in range(c.max_retries + 1):
            try:
                return self._fetch_once(url, data, headers, what)
            except _Transient as failure:
                last = self._redact(str(failure))
                if attempt < c.max_retries:
                    wait = self._backoff(attempt)
                    logger.warning("%s: %s; retry %d/%d in %.2f s", what, last, attempt + 1, c.max_retries, wait)
                    self._sleep(wait)
        raise SearchError(f"{what}: {last}; gave up after {c.max_retries + 1} attempts")

    def _fetch_once(self, url: str, data: bytes | None, headers: dict[str, str], what: str) -> bytes:
        """One request: the body, `_Transient` for what a retry may fix, SearchError otherwise."""
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                return response.read(self.config.max_response_bytes)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 429 or error.code >= 500:
                raise _Transient(f"HTTP {error.code} {error.reason}") from None
            raise SearchError(self._redact(f"{what}: HTTP {error.code} {error.reason} (not retried)")) from None
        except (TimeoutError, socket.timeout):
            raise _Transient(f"timed out after {self.config.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Transient(f"timed out after {self.config.timeout_s:g} s") from None
            raise _Transient(f"connection failed ({reason})") from None

    def _backoff(self, attempt: int) -> float:
        c = self.config
        with self._rng_lock:
            u = self._rng.random()
        return min(c.backoff_max_s, c.backoff_s * 2 ** attempt) * (1.0 + c.jitter * u)

    def _redact(self, text: str) -> str:
        """Belt and braces: a server could echo the key back in an error reason."""
        return text.replace(self._api_key.value, "[REDACTED]") if self._api_key.value else text

"""`CachedBackend`: a persistent sqlite cache around any backend, so a run pays for a search
once and replays it exactly (the same results, in the same order, with the same scores).

Keys are sha256 digests of (backend identifier, kind, k, payload): for an image search the
payload is the shape and the raw bytes of the uint8 image, for a text search the normalised
query (NFKC, lower-case, whitespace collapsed), so "Eiffel  Tower" and "eiffel tower" share an
entry. Backend identifiers hold no secrets (see `SearchBackend.identifier`), and neither do
rows: a row keeps the key, the kind, the normalised query (images: only the shape), k and the
results as JSON.

Failures are not cached by default: a timeout now may succeed later, and freezing it would
make a transient outage permanent for the rest of an RL run. `record_failures=True` stores
them too and replays the same SearchError message: use it to replay an evaluation exactly,
failures included (what a trajectory saw when a tool failed is part of the trajectory).

Thread-safe: one connection behind a lock (sqlite calls are short next to a search). Identical
searches in flight at once (G rollouts of one question glancing at the same image) make one
backend call; the others wait for its answer.
"""

from collections.abc import Callable
from concurrent.futures import Future
import hashlib
import json
import sqlite3
import threading
import time
import unicodedata

import numpy as np

from gog_jax.search.base import SearchBackend, SearchError, SearchResult, check_image, check_k, check_query

_SCHEMA = """CREATE TABLE IF NOT EXISTS searches (
  key TEXT PRIMARY KEY, backend TEXT NOT NULL, kind TEXT NOT NULL, query TEXT NOT NULL, k INTEGER NOT NULL,
  results TEXT, error TEXT, created REAL NOT NULL)"""


def normalise_query(query: str) -> str:
    """NFKC, lower-case, whitespace collapsed and stripped."""
    return " ".join(unicodedata.normalize("NFKC", query).lower().split())


class CachedBackend(SearchBackend):
    """Wraps `backend`; answers from the sqlite file at `path` when it can."""

    def __init__(self, backend: SearchBackend, path: str, *, record_failures: bool = False):
        self.backend = backend
        self._backend_id = backend.identifier  # read once: it may be costly (a hash of an index)
        self.path = path
        self.record_failures = record_failures
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future] = {}
        # timeout: other processes (hosts sharing the file) may hold the write lock briefly.
        self._db = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"CachedBackend({self.backend!r}, path={self.path!r})"

    @property
    def identifier(self) -> str:
        return self._backend_id

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def image_search(self, image: np.ndarray, k: int) -> list[SearchResult]:
        image, k = check_image(image), check_k(k)
        digest = hashlib.sha256(f"{image.shape}".encode() + image.tobytes()).hexdigest()
        return self._cached("image", digest, f"image{list(image.shape)}", k, lambda: self.backend.image_search(image, k))

    def text_search(self, query: str, k: int) -> list[SearchResult]:
        query, k = check_query(query), check_k(k)
        normal = normalise_query(query)
        return self._cached("text", normal, normal, k, lambda: self.backend.text_search(query, k))

    def _cached(self, kind: str, payload: str, shown: str, k: int,
                call: Callable[[], list[SearchResult]]) -> list[SearchResult]:
        """The stored answer for this key, else `call()`'s (stored unless it failed)."""
        key = hashlib.sha256(json.dumps([self._backend_id, kind, k, payload]).encode()).hexdigest()
        with self._lock:
            row = self._execute("SELECT results, error FROM searches WHERE key = ?", (key,)).fetchone()
            if row is not None:
                self.hits += 1
                return _replay(row)
            future = self._in_flight.get(key)
            leader = future is None
            if leader:
                future = self._in_flight[key] = Future()
                self.misses += 1
        if not leader:
            return list(future.result())
        try:
            results = self._call_and_store(key, kind, shown, k, call)
        except BaseException as error:  # waiters must never hang, whatever went wrong
            future.set_exception(error)
            raise
        else:
            future.set_result(results)
            return list(results)
        finally:
            with self._lock:
                del self._in_flight[key]

    def _call_and_store(self, key: str, kind: str, shown: str, k: int,
                        call: Callable[[], list[SearchResult]]) -> list[SearchResult]:
        try:
            stored = json.dumps([r.to_dict() for r in call()])
        except SearchError as error:
            if self.record_failures:
                self._store(key, kind, shown, k, None, str(error))
            raise
        self._store(key, kind, shown, k, stored, None)
        return _replay((stored, None))  # the first answer is the replayed one, bit for bit

    def _store(self, key: str, kind: str, shown: str, k: int, results: str | None, error: str | None) -> None:
        with self._lock:
            self._execute("INSERT OR REPLACE INTO searches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (key, self._backend_id, kind, shown, k, results, error, time.time()))

    def _execute(self, sql: str, params: tuple) -> sqlite3.Cursor:
        """Runs one statement (the caller holds the lock); a broken cache is a tool failure."""
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as error:
            raise SearchError(f"search cache {self.path}: {error}") from None


def _replay(row: tuple[str | None, str | None]) -> list[SearchResult]:
    results, error = row
    if error is not None:
        raise SearchError(error)
    return [SearchResult.from_dict(d) for d in json.loads(results)]

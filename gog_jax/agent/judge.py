"""An LLM judge over any OpenAI-compatible chat endpoint, with a verdict cache.

The paper judges accuracy with an LLM (gpt-oss-120b). RL asks the same (question, gold,
prediction) many times across rollouts and epochs, so verdicts are cached (sqlite on disk or
in memory) and a repeated question costs no request. Only the standard library: the judge
must work on a TPU VM with nothing else installed. The API key is read from the environment
variable the caller names, sent only in the Authorization header, never logged or cached.
"""

import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

PROMPT = (
    "You grade answers to questions. Decide whether the predicted answer means the same as any of "
    "the gold answers (ignore case, articles, punctuation and harmless extra words).\n"
    "Question: {question}\nGold answers: {golds}\nPredicted answer: {prediction}\n"
    "Reply with exactly one word: CORRECT or INCORRECT.")


class JudgeError(Exception):
    """The endpoint failed or answered something that is not a verdict, after all retries."""


class LLMJudge:
    """`judge(question, golds, prediction) -> 1.0 | 0.0`; `accuracy` fits the rewards registry."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout_s: float = 30.0,
                 retries: int = 2, backoff_s: float = 0.5, cache_path: str | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout_s, self.retries, self.backoff_s = model, timeout_s, retries, backoff_s
        self._api_key_env = api_key_env
        self._lock = threading.Lock()
        self._memory: dict[str, float] = {}
        self._db = None
        if cache_path:
            self._db = sqlite3.connect(cache_path, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, score REAL)")
            self._db.commit()
        self.requests = 0  # HTTP requests made (cache hits make none)

    def accuracy(self, prediction: str | None, golds: Sequence[str], question: str) -> float:
        return 0.0 if prediction is None else self.judge(question, golds, prediction)

    def judge(self, question: str, golds: Sequence[str], prediction: str) -> float:
        key = hashlib.sha256(json.dumps([self.model, question, list(golds), prediction]).encode()).hexdigest()
        cached = self._cache_get(key)
        if cached is not None:
            return cached
        score = self._ask(PROMPT.format(question=question, golds="; ".join(golds), prediction=prediction))
        self._cache_put(key, score)
        return score

    def _ask(self, prompt: str) -> float:
        body = json.dumps({"model": self.model, "temperature": 0.0,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self._api_key_env) if self._api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            with self._lock:
                self.requests += 1
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    content = json.loads(response.read())["choices"][0]["message"]["content"]
                return _verdict(content)
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code}"
                if error.code < 500 and error.code != 429:
                    break  # a client error will not fix itself
            except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError,
                    TypeError) as error:
                last = type(error).__name__
        raise JudgeError(f"Judge at {self.url} failed after {attempt + 1} attempt(s): {last}.")

    def _cache_get(self, key: str) -> float | None:
        with self._lock:
            if self._db is None:
                return self._memory.get(key)
            row = self._db.execute("SELECT score FROM verdicts WHERE key = ?", (key,)).fetchone()
            return None if row is None else float(row[0])

    def _cache_put(self, key: str, score: float) -> None:
        with self._lock:
            if self._db is None:
                self._memory[key] = score
            else:
                self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, score))
                self._db.commit()


def _verdict(content: str) -> float:
    """'CORRECT' -> 1.0, 'INCORRECT' -> 0.0; anything else is not a verdict (ValueError)."""
    words = str(content).strip().upper().replace(".", " ").split()
    if "INCORRECT" in words:
        return 0.0
    if "CORRECT" in words:
        return 1.0
    raise ValueError(f"not a verdict: {str(content)[:40]!r}")

import http.server
import json
import sqlite3
import threading
import time

import pytest

from gog_jax.agent import rewards
from gog_jax.agent.judge import JudgeError, LLMJudge

SECRET = "sk-test-secret-123"


class Handler(http.server.BaseHTTPRequestHandler):
    """OpenAI-style chat endpoint: CORRECT iff the prediction line contains a gold answer."""

    mode = "ok"  # "ok" | "500-once" | "garbage" | "slow" | "400"
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if Handler.mode == "500-once" and len(Handler.requests) == 1 or Handler.mode == "500":
            return self._send(500, b"{}")
        if Handler.mode == "400":
            return self._send(400, b"{}")
        if Handler.mode == "garbage":
            return self._send(200, b"{not json")
        if Handler.mode == "slow":
            time.sleep(0.5)
        prompt = body["messages"][0]["content"]
        golds = prompt.split("Gold answers: ")[1].split("\n")[0].split("; ")
        prediction = prompt.split("Predicted answer: ")[1].split("\n")[0]
        verdict = "CORRECT" if any(g.lower() in prediction.lower() for g in golds) else "INCORRECT."
        self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": verdict}}]}).encode())

    def _send(self, code, payload):
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (test_timeout): not a server error to print

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Handler.mode, Handler.requests = "ok", []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_verdicts_auth_and_memory_cache(server, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    judge = LLMJudge(server, "gpt-oss-120b", api_key_env="JUDGE_KEY", backoff_s=0.0)
    assert judge.judge("Who founded it?", ["Ida Merren"], "It was Ida Merren.") == 1.0
    assert judge.judge("Who founded it?", ["Ida Merren"], "Bob") == 0.0
    assert judge.requests == 2
    assert judge.judge("Who founded it?", ["Ida Merren"], "Bob") == 0.0  # cached: no request
    assert judge.requests == 2 and len(Handler.requests) == 2
    first = Handler.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {SECRET}"
    assert first["body"]["model"] == "gpt-oss-120b" and first["body"]["temperature"] == 0.0


def test_sqlite_cache_persists_without_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    path = str(tmp_path / "judge.sqlite")
    a = LLMJudge(server, "m", api_key_env="JUDGE_KEY", cache_path=path)
    assert a.judge("q", ["Paris"], "paris") == 1.0
    b = LLMJudge(server, "m", api_key_env="JUDGE_KEY", cache_path=path)
    assert b.judge("q", ["Paris"], "paris") == 1.0 and b.requests == 0
    assert b.judge("q", ["Paris"], "Lyon") == 0.0 and b.requests == 1
    rows = sqlite3.connect(path).execute("SELECT * FROM verdicts").fetchall()
    assert len(rows) == 2
    assert SECRET.encode() not in open(path, "rb").read()


def test_retries_then_success(server):
    Handler.mode = "500-once"
    judge = LLMJudge(server, "m", backoff_s=0.0)
    assert judge.judge("q", ["a"], "a") == 1.0 and judge.requests == 2


@pytest.mark.parametrize("mode, attempts", [("500", 3), ("garbage", 3), ("400", 1)])
def test_failures_raise_judge_error(server, mode, attempts):
    Handler.mode = mode
    judge = LLMJudge(server, "m", retries=2, backoff_s=0.0)
    with pytest.raises(JudgeError) as info:
        judge.judge("q", ["a"], "a")
    assert judge.requests == attempts and len(Handler.requests) == attempts
    assert SECRET not in str(info.value)


def test_timeout(server):
    Handler.mode = "slow"
    judge = LLMJudge(server, "m", timeout_s=0.1, retries=0)
    start = time.perf_counter()
    with pytest.raises(JudgeError, match="TimeoutError"):
        judge.judge("q", ["a"], "a")
    assert time.perf_counter() - start < 0.45


def test_registered_as_accuracy(server):
    accuracy = rewards.make_accuracy("llm_judge", base_url=server, model="m")
    assert accuracy("Ida Merren", ["Ida Merren"], "who?") == 1.0
    assert accuracy(None, ["Ida Merren"], "who?") == 0.0

"""OpenAICompatibleBackend against a real HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from psyche_utils.llm import BackendError, GenerationSettings, OpenAICompatibleBackend

Reply = tuple[int, dict[str, str], bytes]


def completion(content: str) -> bytes:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "teacher",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return json.dumps(body).encode()


def echo(request: dict) -> Reply:
    """Answer with the last user message, so the test can check replies come back in order."""
    return 200, {}, completion("echo:" + request["messages"][-1]["content"])


@dataclass
class FakeServer:
    """Plays a scripted list of replies (then ``default``), recording every request and the peak concurrency."""

    script: list[Callable[[dict], Reply]] = field(default_factory=list)
    default: Callable[[dict], Reply] = echo
    delay: float = 0.0
    requests: list[dict] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: dict) -> Reply:
        with self.lock:
            self.requests.append(request)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            step = self.script.pop(0) if self.script else self.default
        try:
            time.sleep(self.delay)
            return step(request)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def server() -> Iterator[tuple[FakeServer, str]]:
    fake = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(length) or b"{}")
            request["_path"] = self.path
            status, headers, body = fake.handle(request)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Callable[[dict], Reply]:
    body = json.dumps({"error": {"message": message, "type": "test_error", "code": status}}).encode()
    return lambda request: (status, headers or {}, body)


FAST_RETRY = {"retry-after-ms": "10"}
SETTINGS = GenerationSettings(max_new_tokens=32, temperature=0.0, top_p=1.0, seed=7)


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "你是老师。"}, {"role": "user", "content": text}]


def test_sends_the_model_messages_and_settings(server):
    fake, url = server
    backend = OpenAICompatibleBackend(url, "teacher-7b", api_key="secret", max_retries=0)
    assert backend.generate([prompt("你好")], SETTINGS) == ["echo:你好"]
    request = fake.requests[0]
    assert request["_path"] == "/v1/chat/completions"
    assert request["model"] == "teacher-7b"
    assert request["messages"] == prompt("你好")
    assert (request["max_tokens"], request["temperature"], request["top_p"], request["seed"]) == (32, 0.0, 1.0, 7)


def test_retries_server_errors_then_succeeds(server):
    fake, url = server
    fake.script = [error(503, "overloaded", FAST_RETRY), error(500, "boom", FAST_RETRY)]
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=3)
    assert backend.generate([prompt("题目")], SETTINGS) == ["echo:题目"]
    assert len(fake.requests) == 3


def test_retries_rate_limit_and_honours_retry_after(server):
    fake, url = server
    fake.script = [error(429, "slow down", {"retry-after-ms": "150"})]
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=2)
    started = time.monotonic()
    assert backend.generate([prompt("a")], SETTINGS) == ["echo:a"]
    assert len(fake.requests) == 2
    assert time.monotonic() - started >= 0.15


def test_gives_up_after_max_retries_with_a_clear_error(server):
    fake, url = server
    fake.default = error(500, "still broken", FAST_RETRY)
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=2)
    with pytest.raises(BackendError) as caught:
        backend.generate([prompt("a")], SETTINGS)
    assert len(fake.requests) == 3  # the first try and two retries
    message = str(caught.value)
    assert "teacher" in message and "still broken" in message


def test_client_errors_are_not_retried(server):
    fake, url = server
    fake.default = error(400, "unknown model 'teacher'")
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=3)
    with pytest.raises(BackendError, match="unknown model"):
        backend.generate([prompt("a")], SETTINGS)
    assert len(fake.requests) == 1


def test_a_reply_that_is_not_json_is_a_backend_error(server):
    fake, url = server
    fake.default = lambda request: (200, {}, b"<html>gateway</html>")
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=0)
    with pytest.raises(BackendError, match="teacher"):
        backend.generate([prompt("a")], SETTINGS)


def test_time_out_is_a_backend_error(server):
    fake, url = server
    fake.delay = 1.0
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=0, timeout=0.2)
    with pytest.raises(BackendError, match="teacher"):
        backend.generate([prompt("a")], SETTINGS)


def test_concurrency_is_bounded_and_order_is_kept(server):
    fake, url = server
    fake.delay = 0.15
    backend = OpenAICompatibleBackend(url, "teacher", max_concurrency=2, max_retries=0)
    texts = [f"问题{i}" for i in range(6)]
    assert backend.generate([prompt(t) for t in texts], SETTINGS) == [f"echo:{t}" for t in texts]
    assert fake.peak_in_flight == 2


def test_from_env(monkeypatch, server):
    _, url = server
    monkeypatch.delenv("PSYCHE_TEACHER_URL", raising=False)
    assert OpenAICompatibleBackend.from_env() is None
    monkeypatch.setenv("PSYCHE_TEACHER_URL", url)
    monkeypatch.delenv("PSYCHE_TEACHER_MODEL", raising=False)
    with pytest.raises(BackendError, match="PSYCHE_TEACHER_MODEL"):
        OpenAICompatibleBackend.from_env()
    monkeypatch.setenv("PSYCHE_TEACHER_MODEL", "teacher")
    backend = OpenAICompatibleBackend.from_env(max_retries=0)
    assert backend is not None and backend.generate([prompt("x")], SETTINGS) == ["echo:x"]


def test_a_reply_without_choices_is_a_backend_error(server):
    fake, url = server
    fake.default = lambda request: (200, {}, json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode())
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=0)
    with pytest.raises(BackendError, match="without choices"):
        backend.generate([prompt("a")], SETTINGS)

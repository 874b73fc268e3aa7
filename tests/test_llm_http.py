"""OpenAICompatibleBackend against a real HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from psyche_utils.llm import BackendError, CachedBackend, GenerationSettings, OpenAICompatibleBackend

Reply = tuple[int, dict[str, str], bytes]


def completion(content: str | None, finish_reason: str = "stop") -> bytes:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "teacher",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
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
    # vLLM fills unset fields from the model's generation_config, so these two are always sent.
    assert (request["top_k"], request["repetition_penalty"]) == (0, 1.0)


def test_sends_top_k_and_repetition_penalty_as_given(server):
    fake, url = server
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=0)
    backend.generate([prompt("a")], GenerationSettings(temperature=0.7, top_k=20, repetition_penalty=1.05))
    assert (fake.requests[0]["top_k"], fake.requests[0]["repetition_penalty"]) == (20, 1.05)
    plain = OpenAICompatibleBackend(url, "teacher", max_retries=0, vllm_sampling=False)
    plain.generate([prompt("b")], SETTINGS)
    assert "top_k" not in fake.requests[1] and "repetition_penalty" not in fake.requests[1]


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


def by_content(replies: dict[str, Callable[[dict], Reply]]) -> Callable[[dict], Reply]:
    """Answer each prompt by its text: a scripted reply for the named ones, an echo for the rest."""

    def step(request: dict) -> Reply:
        text = request["messages"][-1]["content"]
        return replies[text](request) if text in replies else echo(request)

    return step


def test_a_failure_part_way_keeps_finished_replies_and_stops_sending(server, tmp_path):
    fake, url = server
    fake.default = by_content({"坏": error(400, "context too long")})
    backend = OpenAICompatibleBackend(url, "teacher", max_concurrency=1, max_retries=0, progress=False)
    cached = CachedBackend(backend, tmp_path / "cache.sqlite")
    texts = ["一", "二", "坏", "三", "四"]
    with pytest.raises(BackendError, match="context too long") as caught:
        cached.generate([prompt(t) for t in texts], SETTINGS)
    assert "2 of 5 replies had arrived" in str(caught.value)
    sent = [r["messages"][-1]["content"] for r in fake.requests]
    assert sent == ["一", "二", "坏"], "requests after the fatal error should have been cancelled"
    fake.requests.clear()
    assert cached.generate([prompt("一"), prompt("二")], SETTINGS) == ["echo:一", "echo:二"]
    assert fake.requests == [], "the replies that arrived before the failure were not cached"


def test_truncated_and_null_replies_are_counted_and_not_cached(server, tmp_path):
    fake, url = server
    fake.default = by_content({
        "长": lambda request: (200, {}, completion("写到一半", finish_reason="length")),
        "空": lambda request: (200, {}, completion(None)),
    })
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=0, progress=False)
    cached = CachedBackend(backend, tmp_path / "cache.sqlite")
    with pytest.warns(UserWarning, match="1 stopped early and 1 came back empty"):
        replies = cached.generate([prompt("长"), prompt("空"), prompt("好")], SETTINGS)
    assert replies == ["写到一半", "", "echo:好"]
    report = backend.last_report
    assert (report.requested, report.completed, report.truncated, report.empty) == (3, 3, 1, 1)
    assert report.finish_reasons == {"length": 1, "empty": 1, "stop": 1}
    assert cached.not_cached == 2
    fake.requests.clear()
    with pytest.warns(UserWarning):
        cached.generate([prompt("长"), prompt("空"), prompt("好")], SETTINGS)
    assert sorted(r["messages"][-1]["content"] for r in fake.requests) == ["空", "长"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_says_so_at_once(server, status):
    fake, url = server
    fake.default = error(status, "invalid api key")
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=5)
    with pytest.raises(BackendError) as caught:
        backend.generate([prompt("a")], SETTINGS)
    message = str(caught.value)
    assert f"({status})" in message and "PSYCHE_TEACHER_KEY" in message and "retries" not in message
    assert len(fake.requests) == 1


def test_concurrency_and_timeout_defaults_and_environment(monkeypatch, server):
    _, url = server
    monkeypatch.delenv("PSYCHE_TEACHER_CONCURRENCY", raising=False)
    monkeypatch.delenv("PSYCHE_TEACHER_TIMEOUT", raising=False)
    backend = OpenAICompatibleBackend(url, "teacher")
    assert (backend.max_concurrency, backend.timeout) == (32, 600.0)
    monkeypatch.setenv("PSYCHE_TEACHER_CONCURRENCY", "64")
    monkeypatch.setenv("PSYCHE_TEACHER_TIMEOUT", "1200")
    backend = OpenAICompatibleBackend(url, "teacher")
    assert (backend.max_concurrency, backend.timeout) == (64, 1200.0)
    assert OpenAICompatibleBackend(url, "teacher", max_concurrency=3, timeout=5).max_concurrency == 3
    monkeypatch.setenv("PSYCHE_TEACHER_CONCURRENCY", "lots")
    with pytest.raises(BackendError, match="PSYCHE_TEACHER_CONCURRENCY"):
        OpenAICompatibleBackend(url, "teacher")


def test_no_progress_bar_for_a_single_request(server, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # make test switches bars off for kept notebook copies
    _, url = server
    backend = OpenAICompatibleBackend(url, "teacher", max_retries=0)
    backend.generate([prompt("a")], SETTINGS)
    assert "generate (" not in capsys.readouterr().err
    backend.generate([prompt("a"), prompt("b")], SETTINGS)
    assert "2/2" in capsys.readouterr().err

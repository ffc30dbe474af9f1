"""The ``openai`` HTTP backend against real loopback servers: our ``serve`` and small scripted ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from safetydrift.backends import open_backend
from safetydrift.backends.openai_http import OpenAIHTTPBackend, check_reachable
from safetydrift.context import Context
from safetydrift.errors import BackendError, SpecError
from safetydrift.serve import make_server
from safetydrift.types import Conversation, Generation, GenerationConfig, ResolvedModel

FAST = "retries=3,backoff=0.01"


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(cache_dir=tmp_path / "cache", quiet=True)


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield server
    finally:
        stop = getattr(server, "stop", None)
        if stop is not None:
            stop.set()
        server.shutdown()
        server.server_close()
        t.join(5)


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/v1"


def client(url: str, ctx: Context, settings: str = FAST, key_env: str = "SD_TEST_KEY") -> OpenAIHTTPBackend:
    model = ResolvedModel(spec=f"openai:{url}#m", kind="openai", url=url, model_name="m",
                          provenance={"source": "openai", "key_env": key_env})
    backend = open_backend(model, f"openai:{settings}" if settings else None, ctx)
    assert isinstance(backend, OpenAIHTTPBackend)
    return backend


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user(text: str) -> Conversation:
    return [{"role": "user", "content": text}]


class FakeBackend:
    """Deterministic: answers the last user message reversed; 'FAIL' gives a generation error."""

    name = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.seen: list[Conversation] = []
        self.inflight = 0
        self.max_inflight = 0

    def provenance(self) -> dict[str, Any]:
        return {"backend": "fake"}

    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]:
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            time.sleep(self.delay)
            out = []
            for conv in conversations:
                self.seen.append(conv)
                last = [m for m in conv if m["role"] == "user"][-1]["content"]
                if last == "FAIL":
                    out.append(Generation(error="scripted failure"))
                else:
                    text = last[::-1][: config.max_new_tokens]
                    out.append(Generation(text=text, n_tokens=len(text)))
            return out
        finally:
            self.inflight -= 1


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"choices": [{"message": {"role": "assistant", "content": "ok"},
                                                            "finish_reason": "stop"}],
                                               "usage": {"completion_tokens": 1}})
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer(ThreadingHTTPServer):
    """Answers POST number n (0-based) with ``script(n)``; GET answers 404 (still 'reachable')."""

    daemon_threads = True

    def __init__(self, script: Callable[[int], Reply]) -> None:
        self.script = script
        self.attempts = 0
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that timed out and hung up


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _write(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._write(404, b'{"error": {"message": "no such route"}}')

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            n = srv.attempts
            srv.attempts += 1
            srv.bodies.append(body)
            srv.auth.append(self.headers.get("Authorization"))
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
        try:
            reply = srv.script(n)
            if reply.delay:
                srv.stop.wait(reply.delay)
        finally:
            with srv.lock:
                srv.inflight -= 1
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self._write(reply.status, data, reply.headers)


def scripted(script: Callable[[int], Reply]) -> contextlib.AbstractContextManager[ScriptedServer]:
    return serving(ScriptedServer(script))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- round trip via serve
def test_round_trip_through_our_server(ctx: Context) -> None:
    fake = FakeBackend()
    with serving(make_server(fake, "127.0.0.1", 0, "fake-model")) as srv:
        url = url_of(srv)
        b = client(url, ctx)
        cfg = GenerationConfig(max_new_tokens=50, system_prompt="SYS")
        convs = [user("hello"), [{"role": "system", "content": "own"}, *user("abc")]]
        gens = b.generate(convs, cfg)
        assert [g.text for g in gens] == ["olleh", "cba"]
        assert all(g.ok and g.latency_s > 0 for g in gens)
        assert [g.n_tokens for g in gens] == [5, 3]
        # the configured system prompt is prepended, unless the conversation has its own (requests run
        # concurrently, so the server may see them in either order)
        seen = sorted(fake.seen, key=lambda msgs: msgs[-1]["content"])
        assert seen == [[{"role": "system", "content": "own"}, *user("abc")],
                        [{"role": "system", "content": "SYS"}, *user("hello")]]

        models = httpx.get(f"{url}/models").json()
        assert models["object"] == "list" and models["data"][0]["id"] == "fake-model"
        raw = httpx.post(f"{url}/chat/completions",
                         json={"model": "whatever", "messages": user("abcd"), "max_tokens": 2}).json()
        assert raw["object"] == "chat.completion" and raw["model"] == "fake-model"
        assert raw["choices"][0]["message"] == {"role": "assistant", "content": "dc"}
        assert raw["choices"][0]["finish_reason"] == "length"
        assert raw["usage"]["completion_tokens"] == 2
        prov = b.provenance()
        assert prov["url"] == url and prov["model"] == "m" and prov["retries"] == 3


def test_concurrent_requests_keep_order_and_backend_is_serialised(ctx: Context) -> None:
    fake = FakeBackend(delay=0.002)
    with serving(make_server(fake, "127.0.0.1", 0, "fake")) as srv:
        b = client(url_of(srv), ctx, "concurrency=8,retries=0")
        prompts = [f"prompt number {i:03d}" for i in range(60)]
        gens = b.generate([user(p) for p in prompts], GenerationConfig(max_new_tokens=64))
    assert [g.text for g in gens] == [p[::-1] for p in prompts]
    assert fake.max_inflight == 1  # the server's lock: never two calls into the backend at once
    assert list(srv.dispatcher.batches) == [1] * 60


def test_micro_batching_groups_concurrent_requests(ctx: Context) -> None:
    fake = FakeBackend()
    with serving(make_server(fake, "127.0.0.1", 0, "fake", batch_window_ms=30, max_batch=8)) as srv:
        b = client(url_of(srv), ctx, "concurrency=8,retries=0")
        prompts = [f"item {i}" for i in range(40)]
        gens = b.generate([user(p) for p in prompts], GenerationConfig(max_new_tokens=64))
    assert [g.text for g in gens] == [p[::-1] for p in prompts]
    batches = list(srv.dispatcher.batches)
    assert sum(batches) == 40 and max(batches) > 1 and max(batches) <= 8
    assert fake.max_inflight == 1


def test_concurrency_is_bounded(ctx: Context) -> None:
    with scripted(lambda n: Reply(delay=0.05)) as srv:
        b = client(url_of(srv), ctx, "concurrency=4,retries=0")
        gens = b.generate([user(str(i)) for i in range(16)], GenerationConfig())
    assert all(g.ok and g.text == "ok" for g in gens)
    assert 2 <= srv.max_inflight <= 4


def test_generate_from_thread_and_from_running_loop(ctx: Context) -> None:
    with serving(make_server(FakeBackend(), "127.0.0.1", 0, "fake")) as srv:
        b = client(url_of(srv), ctx)
        out: list[list[Generation]] = []
        t = threading.Thread(target=lambda: out.append(b.generate([user("xy")], GenerationConfig())))
        t.start()
        t.join(10)

        async def inside_loop() -> list[Generation]:
            return b.generate([user("pq")], GenerationConfig())

        assert out[0][0].text == "yx"
        assert asyncio.run(inside_loop())[0].text == "qp"


def test_request_payload_and_api_key(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_TEST_KEY", "sk-test-secret")
    with scripted(lambda n: Reply()) as srv:
        b = client(url_of(srv), ctx)
        b.generate([user("hi")], GenerationConfig(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3,
                                                   system_prompt="be nice"))
        monkeypatch.delenv("SD_TEST_KEY")
        b.generate([user("hi")], GenerationConfig())
    assert srv.bodies[0] == {
        "model": "m",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}],
        "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3,
    }
    assert srv.auth == ["Bearer sk-test-secret", None]
    assert "sk-test-secret" not in json.dumps(b.provenance()) + repr(vars(b))


# ----------------------------------------------------------------------------------- retries, errors
def test_retries_then_success(ctx: Context) -> None:
    with scripted(lambda n: Reply(500, {"error": {"message": "busy"}}) if n < 2 else Reply()) as srv:
        g = client(url_of(srv), ctx).generate([user("x")], GenerationConfig())[0]
    assert g.ok and g.text == "ok" and g.n_tokens == 1
    assert srv.attempts == 3 and g.meta["attempts"] == 3


def test_429_is_retried_and_retry_after_honoured(ctx: Context) -> None:
    with scripted(lambda n: Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"})
                  if n == 0 else Reply()) as srv:
        g = client(url_of(srv), ctx).generate([user("x")], GenerationConfig())[0]
    assert g.ok and srv.attempts == 2


def test_5xx_forever_is_an_error_after_retries(ctx: Context) -> None:
    with scripted(lambda n: Reply(503, {"error": {"message": "down for maintenance"}})) as srv:
        g = client(url_of(srv), ctx, "retries=3,backoff=0.01").generate([user("x")], GenerationConfig())[0]
    assert not g.ok and g.text == ""
    assert "HTTP 503" in g.error and "down for maintenance" in g.error and "4 attempts" in g.error
    assert srv.attempts == 3 + 1


def test_other_4xx_is_not_retried(ctx: Context) -> None:
    with scripted(lambda n: Reply(400, {"error": {"message": "model 'm' does not exist"}})) as srv:
        g = client(url_of(srv), ctx).generate([user("x")], GenerationConfig())[0]
    assert not g.ok and g.error == "HTTP 400: model 'm' does not exist"
    assert srv.attempts == 1


def test_timeout_is_an_error(ctx: Context) -> None:
    with scripted(lambda n: Reply(delay=5)) as srv:
        t0 = time.monotonic()
        g = client(url_of(srv), ctx, "timeout=0.3,retries=1,backoff=0.01").generate([user("x")], GenerationConfig())[0]
        elapsed = time.monotonic() - t0
    assert not g.ok and "timeout" in g.error
    assert srv.attempts == 2 and elapsed < 3


@pytest.mark.parametrize(
    "body",
    [b"this is not json", {"choices": []}, {"choices": [{"message": {}}]},
     {"choices": [{"message": {"content": None}}]}, {"id": "x"}, [1, 2]],
)
def test_malformed_body_is_an_error_not_a_response(ctx: Context, body: Any) -> None:
    with scripted(lambda n: Reply(200, body)) as srv:
        g = client(url_of(srv), ctx).generate([user("x")], GenerationConfig())[0]
    assert not g.ok and g.error.startswith("malformed response") and g.text == ""
    assert srv.attempts == 1


def test_connection_lost_mid_run_is_a_per_sample_error(ctx: Context) -> None:
    srv = make_server(FakeBackend(), "127.0.0.1", 0, "fake")
    with serving(srv):
        b = client(url_of(srv), ctx, "retries=1,backoff=0.01")
    g = b.generate([user("x")], GenerationConfig())[0]  # the server is gone now
    assert not g.ok and "connection error" in g.error and g.meta["attempts"] == 2


# ------------------------------------------------------------------------------ reachability, specs
def test_unreachable_endpoint_fails_at_construction(ctx: Context) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(BackendError) as ei:
        client(url, ctx)
    msg = str(ei.value)
    assert msg.startswith(f"endpoint unreachable: {url}") and "\n" not in msg
    with pytest.raises(BackendError):
        check_reachable(url, 1.0)


def test_bad_backend_settings(ctx: Context) -> None:
    with scripted(lambda n: Reply()) as srv:
        for bad in ("concurrency=0", "timeout=0", "retries=-1", "backoff=-1", "retry=2", "timeout=soon"):
            with pytest.raises(SpecError):
                client(url_of(srv), ctx, bad)


# --------------------------------------------------------------------------------- our server's API
@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
        ({"messages": [{"role": "user", "content": "hi"}], "seed": 1.5}, "seed"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, "stream"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": 7}, "model"),
    ],
)
def test_server_rejects_bad_requests_with_400(body: Any, param: str | None) -> None:
    fake = FakeBackend()
    with serving(make_server(fake, "127.0.0.1", 0, "fake")) as srv:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(f"{url_of(srv)}/chat/completions", content=data,
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"] and err["param"] == param
    assert fake.seen == []


def test_server_errors_and_text_parts(ctx: Context) -> None:
    with serving(make_server(FakeBackend(), "127.0.0.1", 0, "fake")) as srv:
        url = url_of(srv)
        r = httpx.post(f"{url}/chat/completions", json={"messages": user("FAIL")})
        assert r.status_code == 500 and "scripted failure" in r.json()["error"]["message"]
        assert httpx.post(f"{url}/completions", json={}).status_code == 404
        assert httpx.get(f"{url}/nothing").status_code == 404
        assert httpx.get(f"{url}/models/fake").json()["id"] == "fake"
        parts = {"messages": [{"role": "developer", "content": "d"},
                              {"role": "user", "content": [{"type": "text", "text": "ab"}]}]}
        r = httpx.post(f"{url}/chat/completions", json=parts)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ba"
        # the openai backend sees a server-side generation error as an error, not as text
        g = client(url, ctx, "retries=0").generate([user("FAIL")], GenerationConfig())[0]
        assert not g.ok and "HTTP 500" in g.error


# ------------------------------------------------------------------------------------------- the CLI
def test_cli_eval_unreachable_endpoint_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    port = closed_port()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from safetydrift.cli import main; sys.exit(main())",
         "--cache", str(tmp_path / "cache"), "eval", "--model", f"openai:http://127.0.0.1:{port}/v1#m",
         "--dataset", "advbench50", "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "endpoint unreachable" in lines[0]
    assert not (out / "results.jsonl").exists()


def test_cli_eval_end_to_end_against_live_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetydrift.cli import main

    fake = FakeBackend()
    out = tmp_path / "out"
    with serving(make_server(fake, "127.0.0.1", 0, "fake")) as srv:
        model = f"openai:{url_of(srv)}#fake"
        rc = main(["--cache", str(tmp_path / "cache"), "--quiet", "eval", "--model", model,
                   "--dataset", "advbench50", "--limit", "3", "--max-new-tokens", "400", "--judge", "keyword",
                   "--out", str(out)])
    assert rc == 0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and len(fake.seen) == 3
    for r in recs:
        assert r["error"] is None and r["response"] == r["behavior"][::-1]
        assert r["model"] == model and r["backend_info"]["backend"] == "openai"
        assert r["verdict"] in ("success", "fail")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"][model]["n"] == 3


# ------------------------------------------------------------------------- a real model behind serve
def test_served_transformers_model_matches_direct_generation(tmp_path: Path) -> None:
    ctx = Context(cache_dir=tmp_path, quiet=True)
    direct = ctx.backend("tiny-random")
    cfg = GenerationConfig(max_new_tokens=8)
    convs = [user("Hello there"), user("How do I bake bread?")]
    expected = [direct.generate([c], cfg)[0] for c in convs]
    with serving(make_server(direct, "127.0.0.1", 0, "tiny-random")) as srv:
        url = url_of(srv)
        served = client(url, ctx, "retries=0").generate(convs, cfg)
        raw = httpx.post(f"{url}/chat/completions",
                         json={"messages": convs[0], "max_tokens": 2, "temperature": 0}).json()
    assert all(g.ok for g in served)
    assert [g.text for g in served] == [g.text for g in expected]
    assert [g.n_tokens for g in served] == [g.n_tokens for g in expected]
    assert raw["usage"]["prompt_tokens"] > 0
    assert raw["usage"]["total_tokens"] == raw["usage"]["prompt_tokens"] + raw["usage"]["completion_tokens"]

"""The HTTP side of ``safetydrift serve``: connections, limits, access checks (design: ``serve/__init__.py``).

Everything here answers from the request line and headers before a body is read: a wrong ``Host`` or
``Origin`` (403), a missing API key (401), an unknown path (404), no or an oversized ``Content-Length``
(411/413). Such an answer closes the connection *lingering*: the socket's write side is shut and whatever
the client is still sending is read and discarded (bounded), so the client reads the answer instead of a
connection reset.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from safetydrift.serve.api import MAX_BODY, APIError, parse_chat_request
from safetydrift.serve.dispatch import Dispatcher
from safetydrift.types import CONTEXT_EXCEEDED

LISTEN_BACKLOG = 1024  # pending TCP connections the kernel holds (capped by net.core.somaxconn)
DEFAULT_MAX_CONNECTIONS = 1024  # connection threads; beyond this a new connection gets an immediate 503
POLL_S = 0.05  # how often a waiting connection checks that its client is still there
LINGER_S, LINGER_BYTES = 2.0, 2 * MAX_BODY  # what an early answer reads and discards before closing
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_hosts(bound: str, port: int) -> frozenset[str]:
    """``Host`` values a loopback server answers: its loopback names with its port (bare on port 80)."""
    names = {*_LOOPBACK_NAMES, f"[{bound}]" if ":" in bound else bound}
    hosts = {f"{n}:{port}" for n in names}
    return frozenset(hosts | (names if port == 80 else set()))


def _readable(sock: socket.socket) -> bool:
    """Without blocking; poll() where there is one (select() fails on descriptors over 1023)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


class OpenAIServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never blocks shutdown
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher, model_name: str,
                 log: Callable[[str], None] | None = None, *, api_key: str | None = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.dispatcher = dispatcher
        self.model_name = model_name
        self.log = log
        self.created = int(time.time())
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.max_connections = max(1, max_connections)
        self._connections = 0
        self._count_lock = threading.Lock()
        super().__init__(address, _Handler)
        self.allowed_hosts: frozenset[str] | None = None  # None: any Host (bound to a non-loopback address)
        self.allowed_origins: frozenset[str] | None = None
        if is_loopback(address[0]):
            self.allowed_hosts = loopback_hosts(str(self.server_address[0]), int(self.server_address[1]))
            self.allowed_origins = frozenset(f"http://{h}" for h in self.allowed_hosts)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            full = self._connections >= self.max_connections
            if not full:
                self._connections += 1
        if full:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._count_lock:
            self._connections -= 1

    def _refuse(self, request: socket.socket) -> None:
        """503 at once, without a thread: the connection limit protects the process, not the model."""
        err = APIError(503, f"too many connections (limit {self.max_connections})", "server_error", code="overloaded")
        body = json.dumps(err.body()).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self.dispatcher.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # a client that went away
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: OpenAIServer
    server_version = "safetydrift"
    disable_nagle_algorithm = True  # no 40 ms Nagle + delayed-ACK stall between small writes
    wbufsize = -1  # buffer the response: headers and body leave in one write (flushed per request)
    timeout = 120  # seconds of client silence (idle keep-alive, a body that never arrives) before closing

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.log is not None:
            self.server.log(f"{self.address_string()} {format % args}")

    # ------------------------------------------------------------------------------------ answering
    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, err: APIError) -> None:
        self._send(err.status, err.body(), err.headers)

    def _reject(self, err: APIError) -> None:
        """Answer before the body is read, then close lingering (see the module docstring)."""
        self.close_connection = True
        self._error(err)
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_S)
            deadline, left = time.monotonic() + LINGER_S, LINGER_BYTES
            while left > 0 and time.monotonic() < deadline:
                chunk = self.connection.recv(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _client_gone(self) -> bool:
        """True once the client has closed its end (readable with nothing to read) or the socket failed."""
        try:
            if not _readable(self.connection):
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # ------------------------------------------------------------------------------------ checks
    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def _access(self) -> APIError | None:
        srv = self.server
        if srv.allowed_hosts is not None:
            host = (self.headers.get("Host") or "").strip().lower()
            port = srv.server_address[1]
            if host not in srv.allowed_hosts:
                return APIError(403, f"Host {host!r} is not served here; use http://127.0.0.1:{port}",
                                "permission_error", code="forbidden_host")
            origin = self.headers.get("Origin")
            if origin is not None and origin.strip().lower() not in (srv.allowed_origins or ()):
                return APIError(403, f"Origin {origin!r} is not allowed", "permission_error", code="forbidden_origin")
        if srv.api_key is not None:
            scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
            given = token.strip().encode("latin-1", errors="replace")  # header bytes, as sent
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, srv.api_key):
                return APIError(401, "missing or invalid API key: send 'Authorization: Bearer <key>'",
                                code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        return None

    def _precheck_post(self) -> tuple[APIError | None, int]:
        """(the error to answer from the headers alone, or None; the body length)."""
        err = self._access()
        if err is not None:
            return err, 0
        if self._path() != "/v1/chat/completions":
            return APIError(404, f"unknown path {self._path() or '/'}", code="not_found"), 0
        length = (self.headers.get("Content-Length") or "").strip()
        if not length.isdigit() or "Transfer-Encoding" in self.headers:
            return APIError(411, "a Content-Length header is required"), 0
        if int(length) > MAX_BODY:
            return APIError(413, f"request body of {int(length)} bytes is over the limit of {MAX_BODY}",
                            code="request_too_large"), 0
        return None, int(length)

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: refuse from the headers, so the client never sends a doomed body."""
        if self.command == "POST":
            err, _ = self._precheck_post()
            if err is not None:
                self._reject(err)
                return False
        return super().handle_expect_100()

    # ------------------------------------------------------------------------------------ methods
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        err = self._access()
        if err is not None:
            self._reject(err)
            return
        path = self._path()
        card = {"id": self.server.model_name, "object": "model", "created": self.server.created,
                "owned_by": "safetydrift"}
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [card]})
        elif path == f"/v1/models/{self.server.model_name}":
            self._send(200, card)
        elif path.startswith("/v1/models/"):
            self._error(APIError(404, f"model {path[len('/v1/models/'):]!r} not found", code="model_not_found"))
        else:
            self._error(APIError(404, f"unknown path {path or '/'}", code="not_found"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        err, length = self._precheck_post()
        if err is not None:
            self._reject(err)
            return
        raw = self.rfile.read(length)
        if len(raw) < length:  # the client hung up mid-body: nobody to answer
            self.close_connection = True
            return
        try:
            conv, config = parse_chat_request(raw)
            job = self.server.dispatcher.submit(conv, config, self._client_gone)
        except APIError as e:
            self._error(e)
            return
        while not job.done.wait(POLL_S):
            if self._client_gone():
                self.server.dispatcher.cancel(job)
                break
        result = job.result
        if job.cancelled or result is None:
            self.close_connection = True
            self.log_message("client went away: request dropped")
            return
        if isinstance(result, APIError):
            self._error(result)
            return
        if not result.ok:
            if result.meta.get("error_kind") == CONTEXT_EXCEEDED:
                self._error(APIError(400, str(result.error), param="messages", code=CONTEXT_EXCEEDED))
            else:
                self._error(APIError(500, f"generation failed: {result.error}", type_="server_error"))
            return
        finish = "length" if result.n_tokens >= config.max_new_tokens else "stop"
        prompt_tokens = job.prompt_tokens
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": result.n_tokens,
                      "total_tokens": prompt_tokens + result.n_tokens},
        })

"""``safetydrift serve``: any model or variant as an OpenAI-compatible chat endpoint.

    safetydrift serve "tiny-random>align" --port 8000
    safetydrift eval --model openai:http://127.0.0.1:8000/v1#tiny-random --dataset advbench50 --out out/

Endpoints: ``POST /v1/chat/completions`` (non-streaming) and ``GET /v1/models`` (``/v1/models/<id>``).

Why the standard library and not an ASGI stack (uvicorn/starlette)
    The model is the bottleneck: one CPU (or GPU) backend that must be called one batch at a time. An
    event loop would multiplex sockets better, but every request still waits for the same single
    generation worker, so async I/O buys no throughput here, and it would add two dependencies (plus
    their own) to a toolkit whose server is a side door. What broke under load was not threads but missing
    limits: the listen backlog was 5 (connections reset under 100 concurrent clients), nothing bounded the
    work a request could ask for, and nothing noticed a client that had gone. Those are fixed here.

Modules, each importing only the ones before it: ``api`` (request validation, error answers), ``dispatch``
(the generation worker and its queue), ``server`` (HTTP: connections, limits, access checks), and this
one, which puts them together (``make_server``).

Design
- ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) with a listen backlog of ``LISTEN_BACKLOG`` and at most
  ``max_connections`` connection threads (beyond that, an immediate 503). A connection thread parses and
  validates; a single worker thread (``Dispatcher``) is the only caller of the backend, because torch
  models are not thread-safe.
- A bounded FIFO queue in front of the worker: when ``max_queue`` requests are waiting, a new one gets 503
  with ``Retry-After`` (estimated from recent generation times) instead of an ever-longer wait.
- Context check before generation: prompt tokens + ``max_tokens`` must fit the backend's context
  (``types.ContextAware``), else 400 ``context_length_exceeded``. A multi-megabyte prompt is refused after
  tokenizing a prefix (``backends.context_window``), in milliseconds.
- Cancellation: a waiting connection thread notices when its client hangs up and withdraws the request,
  and the worker checks again just before generating, so a queued request whose client is gone is never
  generated. (A client that half-closes its socket after sending counts as gone.)
- Optional micro-batching (``--batch-window-ms``): requests that arrive within the window and share the
  same sampling settings go to the backend as one batch. Off by default, because a batch-mate changes
  left padding and hence, slightly, the numerics.
- Request fields: ``model`` (any string; the answer names the served model), ``messages`` (roles
  system/developer/user/assistant, content a string or a list of text parts), ``max_tokens`` (or
  ``max_completion_tokens``; default 256, at most 8192), ``temperature`` (0-2, default 1 as in the OpenAI
  API; 0 is greedy), ``top_p`` (0-1], default 1), ``seed`` (default 0). ``stream: true`` and ``n > 1``
  are rejected; other OpenAI fields (``stop``, penalties, …) are accepted and ignored.
- Errors are OpenAI-style ``{"error": {"message", "type", "param", "code"}}``: 400 bad request (malformed
  input is never a 500 or a dropped connection), 401 missing/wrong API key, 403 foreign ``Host``/``Origin``,
  404 unknown path, 411 no Content-Length, 413 body over 4 MiB (answered from the headers, before the
  body is read; ``Expect: 100-continue`` clients never send it), 503 queue full, 500 when the backend fails.
- Access (``serve/server.py``): bound to loopback, only ``Host: localhost|127.0.0.1|[::1]:<port>`` and a
  matching ``Origin`` are served (DNS-rebinding defence: a web page cannot reach the model through a name
  that resolves to 127.0.0.1). ``api_key`` requires ``Authorization: Bearer <key>`` (constant-time check).
"""

from __future__ import annotations

from collections.abc import Callable

from safetydrift.serve.api import MAX_BODY, APIError, parse_chat_request
from safetydrift.serve.dispatch import DEFAULT_MAX_QUEUE, Dispatcher
from safetydrift.serve.server import DEFAULT_MAX_CONNECTIONS, OpenAIServer, is_loopback
from safetydrift.types import Backend

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_QUEUE", "MAX_BODY", "APIError", "Dispatcher", "OpenAIServer",
           "is_loopback", "make_server", "parse_chat_request"]


def make_server(backend: Backend, host: str = "127.0.0.1", port: int = 0, model_name: str = "safetydrift",
                *, batch_window_ms: float = 0.0, max_batch: int = 16, max_queue: int = DEFAULT_MAX_QUEUE,
                max_connections: int | None = None, api_key: str | None = None,
                log: Callable[[str], None] | None = None) -> OpenAIServer:
    """An OpenAI-compatible server for ``backend``, bound but not yet serving (call ``serve_forever``).

    ``port=0`` picks a free port (see ``server.server_address`` / ``server.url``). ``batch_window_ms > 0``
    turns on micro-batching; ``api_key`` requires a bearer token; ``log`` receives one line per request.
    """
    dispatcher = Dispatcher(backend, batch_window_ms / 1000.0, max_batch, max_queue)
    try:
        return OpenAIServer((host, port), dispatcher, model_name, log, api_key=api_key,
                            max_connections=max_connections or DEFAULT_MAX_CONNECTIONS)
    except BaseException:
        dispatcher.close()
        raise

"""``safetydrift serve RECIPE``: a model or variant as an OpenAI-compatible endpoint (see the safetydrift.serve package)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from safetydrift.cli.common import make_context
from safetydrift.errors import BackendError, SafetyDriftError

API_KEY_ENV = "SAFETYDRIFT_API_KEY"  # the key without it showing in `ps`


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", metavar="MODEL_OR_RECIPE", help="model spec or variant recipe")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default loopback, where only localhost Host/Origin headers are served)")
    p.add_argument("--backend", default=None, help="backend spec (default by model kind)")
    p.add_argument("--name", default=None, help="model id reported by the endpoint (default: the recipe)")
    p.add_argument("--batch-window-ms", type=float, default=0.0,
                   help="batch requests arriving within this window (default 0: one request at a time)")
    p.add_argument("--max-batch", type=int, default=16, help="largest micro-batch (with --batch-window-ms)")
    p.add_argument("--max-queue", type=int, default=None,
                   help="requests waiting for the model before new ones get 503 + Retry-After (default 256)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections before new ones get an immediate 503 (default 1024)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' (default ${API_KEY_ENV}; unset: no authentication)")


def run(args: argparse.Namespace) -> int:
    from safetydrift.serve import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUE, is_loopback, make_server
    from safetydrift.spec import parse_recipe

    if not 0 <= args.port <= 65535:
        raise SafetyDriftError("--port must be between 0 and 65535")
    if args.batch_window_ms < 0 or args.max_batch < 1:
        raise SafetyDriftError("--batch-window-ms must be >= 0 and --max-batch >= 1")
    max_queue = DEFAULT_MAX_QUEUE if args.max_queue is None else args.max_queue
    max_connections = DEFAULT_MAX_CONNECTIONS if args.max_connections is None else args.max_connections
    if max_queue < 1 or max_connections < 1:
        raise SafetyDriftError("--max-queue and --max-connections must be at least 1")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    recipe = parse_recipe(args.recipe)
    ctx = make_context(args)
    backend = ctx.backend(recipe, args.backend)
    name = args.name or str(recipe)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        server = make_server(backend, args.host, args.port, name, batch_window_ms=args.batch_window_ms,
                             max_batch=args.max_batch, max_queue=max_queue, max_connections=max_connections,
                             api_key=api_key, log=log)
    except OSError as e:
        raise BackendError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    if not is_loopback(args.host) and api_key is None:
        print(f"safetydrift: warning: listening on {args.host} without authentication (set --api-key)",
              file=sys.stderr)
    context = getattr(backend, "context_length", None)
    limits = f"context {context} tokens, " if context else ""
    print(f"serving {name} at {server.url} ({limits}queue {max_queue}{', API key required' if api_key else ''}; "
          "Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("safetydrift: server stopped", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            server.server_close()
    return 0

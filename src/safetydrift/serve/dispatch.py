"""The generation worker: the only caller of the backend, behind a bounded FIFO queue (see ``serve``)."""

from __future__ import annotations

import collections
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from safetydrift.serve.api import APIError
from safetydrift.types import (
    CONTEXT_EXCEEDED,
    Backend,
    ContextAware,
    Conversation,
    Generation,
    GenerationConfig,
)

DEFAULT_MAX_QUEUE = 256  # requests waiting for the model before new ones get 503


@dataclass(eq=False)
class Job:
    """One request on its way through the queue. ``result`` is a Generation or the APIError to answer."""

    conv: Conversation
    config: GenerationConfig
    client_gone: Callable[[], bool] = lambda: False
    done: threading.Event = field(default_factory=threading.Event)
    result: Generation | APIError | None = None
    prompt_tokens: int = 0
    cancelled: bool = False

    def finish(self, result: Generation | APIError | None) -> None:
        self.result = result
        self.done.set()


class Dispatcher:
    """The only way into the backend: one worker thread draining a bounded FIFO queue.

    ``batch_window_s > 0`` (with ``max_batch > 1``) waits that long after the first queued request so that
    others with the same settings can join its batch; otherwise requests go one at a time, in order.
    """

    def __init__(self, backend: Backend, batch_window_s: float = 0.0, max_batch: int = 16,
                 max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self.backend = backend
        self.window = max(0.0, batch_window_s)
        self.max_batch = max(1, max_batch) if self.window > 0 else 1
        self.max_queue = max(1, max_queue)
        self.batches: collections.deque[int] = collections.deque(maxlen=1024)  # recent backend call sizes
        self.seconds: collections.deque[float] = collections.deque(maxlen=32)  # their durations
        self.dropped = 0  # requests withdrawn because their client went away before generation
        self._cond = threading.Condition()
        self._pending: collections.deque[Job] = collections.deque()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="safetydrift-generate", daemon=True)
        self._worker.start()

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, conv: Conversation, config: GenerationConfig,
               client_gone: Callable[[], bool] | None = None) -> Job:
        """Queue one request; APIError(503) when the queue is full or the server is stopping."""
        job = Job(conv, config, client_gone or (lambda: False))
        with self._cond:
            if self._closed:
                raise APIError(503, "server is shutting down", "server_error", code="shutting_down")
            if len(self._pending) >= self.max_queue:
                raise APIError(503, f"server busy: {len(self._pending)} requests are waiting for the model",
                               "server_error", code="overloaded", headers={"Retry-After": str(self.retry_after())})
            self._pending.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Withdraw a request whose client went away (it is dropped if not yet generating)."""
        with self._cond:
            job.cancelled = True
            if job in self._pending:
                self._pending.remove(job)
                self.dropped += 1

    def retry_after(self) -> int:
        """Seconds until the queue should have room again, from recent generation times (1-60)."""
        recent = list(self.seconds)  # a copy: the worker appends concurrently
        per_call = statistics.fmean(recent) if recent else 1.0
        return int(min(60, max(1, math.ceil(per_call * len(self._pending) / self.max_batch))))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=10)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for job in self._pending:
                        job.finish(APIError(503, "server is shutting down", "server_error", code="shutting_down"))
                    self._pending.clear()
                    return
            if self.max_batch > 1:
                time.sleep(self.window)  # let requests that arrive together join the batch
            with self._cond:
                if not self._pending:
                    continue  # all withdrawn while we waited
                first = self._pending[0].config
                batch = [j for j in self._pending if j.config == first][: self.max_batch]
                for j in batch:
                    self._pending.remove(j)
            try:
                self._run(batch)
            except Exception as e:  # never let the worker die: these requests fail, the next ones run
                for j in batch:
                    if not j.done.is_set():
                        j.finish(Generation(error=f"{type(e).__name__}: {e}"))

    def _run(self, batch: list[Job]) -> None:
        live = []
        for j in batch:
            if j.cancelled or j.client_gone():
                with self._cond:
                    j.cancelled = True
                    self.dropped += 1
                j.finish(None)
            else:
                live.append(j)
        if not live:
            return
        config = live[0].config
        if isinstance(self.backend, ContextAware) and self.backend.context_length is not None:
            live = self._fit(self.backend, live, config)
            if not live:
                return
        t0 = time.monotonic()
        self.batches.append(len(live))
        convs = [j.conv for j in live]
        try:
            gens = self.backend.generate(convs, config)
            if len(gens) != len(convs):
                raise RuntimeError(f"backend returned {len(gens)} generations for {len(convs)} requests")
        except Exception as e:  # a broken backend is a 500 for these requests, not a dead server
            gens = [Generation(error=f"{type(e).__name__}: {e}") for _ in convs]
        self.seconds.append(time.monotonic() - t0)
        for j, g in zip(live, gens, strict=True):
            n = g.meta.get("prompt_tokens") if g.meta else None
            if isinstance(n, int) and not isinstance(n, bool):
                j.prompt_tokens = n
            j.finish(g)

    @staticmethod
    def _fit(backend: ContextAware, jobs: list[Job], config: GenerationConfig) -> list[Job]:
        """The jobs whose prompt + max_tokens fit the context; the others are answered 400 here."""
        from safetydrift.backends.context_window import fit_or_errors

        fits = fit_or_errors(lambda convs: backend.fit(convs, config, config.max_new_tokens), [j.conv for j in jobs])
        keep = []
        for j, f in zip(jobs, fits, strict=True):
            j.prompt_tokens = f.tokens
            if f.ok:
                keep.append(j)
            elif f.error_kind == CONTEXT_EXCEEDED:
                j.finish(APIError(400, f"{f.error}; shorten the messages or lower max_tokens", param="messages",
                                  code=CONTEXT_EXCEEDED))
            else:  # the chat template refused the conversation: the client's request, not the server
                j.finish(APIError(400, str(f.error), param="messages", code="invalid_prompt"))
        return keep

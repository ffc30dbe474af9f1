"""``openai`` backend: any OpenAI-compatible ``/chat/completions`` endpoint, over async httpx.

Settings (``--backend openai:concurrency=8,timeout=60,retries=3,backoff=0.5``):

- ``concurrency``: requests in flight at once (an ``asyncio.Semaphore`` and the connection pool size).
- ``timeout``: seconds per request attempt, end to end (connect + send + wait + read).
- ``retries``: extra attempts after a connection error, a timeout, HTTP 429 or HTTP 5xx. Other 4xx
  answers (bad request, auth, unknown model) are not retried: asking again cannot fix them.
- ``backoff``: base delay in seconds; attempt ``k`` (1-based) waits ``backoff * 2**(k-1)`` with "equal
  jitter" (half fixed, half random), or longer if a 429/503 sends a ``Retry-After`` (capped at 60 s).

Every failure after the retries, and every 2xx answer without ``choices[0].message.content`` as a
string, becomes ``Generation(error=...)``: never a response, never an exception.

The API key is read from the environment variable named by the source's ``key_env`` (default
``OPENAI_API_KEY``) at the start of each ``generate`` call, sent as ``Authorization: Bearer`` only if
set, and never stored on the backend, logged, or put into errors or provenance.

Reachability: constructing the backend probes ``GET {url}/models`` with a short timeout
(``check_reachable``). Only a failure to connect at all (refused, DNS, connect timeout, TLS failure, or
a peer that closes without any HTTP answer) raises ``BackendError("endpoint unreachable: ...")``, so a
dead endpoint costs one line and exit 2 instead of a run full of errored samples. Any HTTP answer —
even 401 or 404, since many compatible servers do not implement ``/models`` — counts as reachable, and
so does a read timeout (the server accepted the connection but is busy).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from safetydrift.context import Context
from safetydrift.errors import BackendError, UnsupportedError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import backends
from safetydrift.spec import ComponentSpec
from safetydrift.types import Conversation, Generation, GenerationConfig, ResolvedModel, with_system_prompt

PROBE_TIMEOUT = 5.0  # seconds: the construction-time reachability probe never waits longer
MAX_RETRY_AFTER = 60.0  # seconds: a server's Retry-After is honoured up to this
_SNIPPET = 200  # characters of an error body quoted in Generation.error


def _one_line(text: str, limit: int = _SNIPPET) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise ``BackendError`` (one line) if nothing at ``url`` answers HTTP; any HTTP status is fine."""
    probe = url.rstrip("/") + "/models"
    try:
        with httpx.Client(timeout=timeout) as client:
            client.get(probe)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol, httpx.RemoteProtocolError,
            httpx.InvalidURL) as e:
        reason = _one_line(str(e) or type(e).__name__, 120)
        raise BackendError(f"endpoint unreachable: {url} ({type(e).__name__}: {reason})") from None
    except httpx.HTTPError:
        # Connected, but the probe did not complete (read timeout, reset mid-answer): the server is up
        # and maybe busy. Per-request retries and per-sample errors handle the rest.
        return


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_snippet(resp: httpx.Response) -> str:
    """The server's own error message if it sent an OpenAI-style one, else the start of the body."""
    try:
        body = resp.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("message"):
            return _one_line(body["error"]["message"])
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return _one_line(body["error"])
    except (ValueError, UnicodeDecodeError):
        pass
    return _one_line(resp.text) if resp.content else resp.reason_phrase


@dataclass(frozen=True, kw_only=True)
class OpenAIHTTPParams(Params):
    concurrency: int = field(default=8, metadata=p("requests in flight at once", ge=1))
    timeout: float = field(default=60.0, metadata=p("seconds per request attempt, end to end", gt=0))
    retries: int = field(default=3, metadata=p("extra attempts after a retryable failure (0 = none)", ge=0))
    backoff: float = field(default=0.5, metadata=p("base retry delay in seconds, doubled per attempt", ge=0))


class OpenAIHTTPBackend:
    name = "openai"
    Params = OpenAIHTTPParams
    context_length: int | None = None  # the endpoint's window is unknown here; the server enforces its own

    def __init__(self, model: ResolvedModel, spec: ComponentSpec, ctx: Context, *, probe: bool = True) -> None:
        self.params = from_spec(OpenAIHTTPParams, spec)
        if model.kind != "openai" or not model.url or not model.model_name:
            raise UnsupportedError(f"the openai backend needs an openai:<url>#<model> endpoint, not {model.kind}")
        self.url = model.url.rstrip("/")
        self.model_name = model.model_name
        self.key_env = str(model.provenance.get("key_env") or "OPENAI_API_KEY")
        self.concurrency = self.params.concurrency
        self.timeout = self.params.timeout
        self.retries = self.params.retries
        self.backoff = self.params.backoff
        self._rng = random.Random()  # jitter only; never affects what is generated
        if probe:
            check_reachable(self.url, min(self.timeout, PROBE_TIMEOUT))

    @property
    def endpoint(self) -> str:
        return f"{self.url}/chat/completions"

    def provenance(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "url": self.url,
            "model": self.model_name,
            "key_env": self.key_env,  # the variable's name only, never its value
            "concurrency": self.concurrency,
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": self.backoff,
        }

    # -- public, synchronous ----------------------------------------------------------------------
    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]:
        return self.generate_seeded(conversations, config, [config.seed] * len(conversations))

    def generate_seeded(self, conversations: list[Conversation], config: GenerationConfig,
                        seeds: list[int]) -> list[Generation]:
        """Each request carries its own conversation's seed (``seeds[i]``): every request is sampled on its
        own, so a conversation's text does not depend on what else was sent with it."""
        if len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        if not conversations:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case, in any thread: no loop running here, so start one
            return asyncio.run(self._generate_all(conversations, config, seeds))
        # Called from inside a running event loop (a notebook, an async caller): asyncio.run would
        # refuse, so run our own loop in a worker thread and block on it.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="safetydrift-openai") as pool:
            return pool.submit(asyncio.run, self._generate_all(conversations, config, seeds)).result()

    # -- internals --------------------------------------------------------------------------------
    def payload(self, conv: Conversation, config: GenerationConfig) -> dict[str, Any]:
        msgs = [{"role": m["role"], "content": m["content"]} for m in with_system_prompt(conv, config.system_prompt)]
        return {
            "model": self.model_name,
            "messages": msgs,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": config.seed,
        }

    async def _generate_all(self, conversations: list[Conversation], config: GenerationConfig,
                            seeds: list[int] | None = None) -> list[Generation]:
        key = os.environ.get(self.key_env)  # read per call, held only by this call's client
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), limits=limits, headers=headers) as client:
            configs = [config if seeds is None or s == config.seed else config.replace(seed=s)
                       for s in (seeds or [config.seed] * len(conversations))]
            tasks = [self._one(client, sem, conv, cfg) for conv, cfg in zip(conversations, configs, strict=True)]
            return list(await asyncio.gather(*tasks))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base = self.backoff * (2 ** (attempt - 1))
        delay = base / 2 + self._rng.uniform(0, base / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay

    async def _one(
        self, client: httpx.AsyncClient, sem: asyncio.Semaphore, conv: Conversation, config: GenerationConfig
    ) -> Generation:
        try:
            body = self.payload(conv, config)
        except (KeyError, TypeError) as e:
            return Generation(error=f"bad conversation: {type(e).__name__}: {e}")
        async with sem:
            t0 = time.monotonic()
            last = "no attempt made"
            retry_after: float | None = None
            attempts = 0
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(self._delay(attempt, retry_after))
                    retry_after = None
                attempts += 1
                try:
                    # httpx's timeout bounds each phase; wait_for bounds the whole attempt.
                    resp = await asyncio.wait_for(client.post(self.endpoint, json=body), self.timeout)
                except (asyncio.TimeoutError, httpx.TimeoutException):
                    last = f"timeout after {self.timeout:g}s"
                    continue
                except httpx.TransportError as e:
                    last = f"connection error: {type(e).__name__}: {_one_line(str(e), 120)}"
                    continue
                status = resp.status_code
                if status == 429 or status >= 500:
                    last = f"HTTP {status}: {_error_snippet(resp)}"
                    retry_after = _retry_after(resp)
                    continue
                meta = {"attempts": attempts, "status": status}
                if not 200 <= status < 300:
                    return Generation(error=f"HTTP {status}: {_error_snippet(resp)}", meta=meta,
                                      latency_s=time.monotonic() - t0)
                return self._parse(resp, meta, time.monotonic() - t0)
            return Generation(error=f"{last} (gave up after {attempts} attempts)", meta={"attempts": attempts},
                              latency_s=time.monotonic() - t0)

    @staticmethod
    def _parse(resp: httpx.Response, meta: dict[str, Any], latency: float) -> Generation:
        try:
            data = resp.json()
        except (ValueError, UnicodeDecodeError):
            return Generation(error=f"malformed response: not JSON: {_one_line(resp.text, 80)!r}", meta=meta,
                              latency_s=latency)
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Generation(error="malformed response: no choices[0].message.content", meta=meta, latency_s=latency)
        if not isinstance(content, str):
            return Generation(error=f"malformed response: choices[0].message.content is {type(content).__name__}",
                              meta=meta, latency_s=latency)
        usage = data.get("usage") if isinstance(data, dict) else None
        n_tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(choice, dict) and choice.get("finish_reason") is not None:
            meta["finish_reason"] = choice["finish_reason"]
        return Generation(
            text=content.strip(),
            n_tokens=n_tokens if isinstance(n_tokens, int) and not isinstance(n_tokens, bool) else 0,
            latency_s=latency,
            meta=meta,
        )


@backends.register("openai", help="OpenAI-compatible endpoint over HTTP (concurrency,timeout,retries,backoff)")
@with_params(OpenAIHTTPParams)
def openai_backend(model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> OpenAIHTTPBackend:
    return OpenAIHTTPBackend(model, spec, ctx)


"""A GGUF model on CPU through llama.cpp: chat (one conversation or a batch) and next-token logits.

:class:`LlamaCppModel` renders the GGUF's chat template itself (Jinja, as transformers does), tokenizes the
result with special tokens parsed and no extra BOS, and samples with a llama.cpp sampler chain in
transformers' order until an end-of-generation token, so the two backends answer alike.
:meth:`LlamaCppModel.chat_batch` decodes several conversations as parallel sequences of one context.

Scoring (perplexity, KL to an HF parent) uses only the public :meth:`~LlamaCppModel.token_logits`,
:meth:`~LlamaCppModel.tokenize_text` and :attr:`~LlamaCppModel.n_vocab`; nothing outside this module
touches llama-cpp-python's objects.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetydrift.errors import ModelLoadError
from safetydrift.llamacpp.prefix import Level, PrefixCache, Span, decoded_tokens, prefill_plan
from safetydrift.llamacpp.runtime import (
    cpu_has_amx,
    default_threads,
    import_llama_cpp,
    model_params_without_extra_buffers,
)

#: A prefix shared by several sequences is kept in the prefix cache if it is at least this many tokens.
MIN_CACHED_PREFIX = 32

#: Same fallback as the transformers backend, for a GGUF without ``tokenizer.chat_template``.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class _StalePrefix(Exception):
    """llama.cpp refused a cached prefix state: the cache is dropped and the batch decoded without it."""


def _jinja_env() -> Any:
    """A Jinja environment with the settings and helpers transformers gives chat templates."""
    import json
    from datetime import datetime

    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        from jinja2.exceptions import TemplateError

        raise TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class LlamaCppModel:
    """A GGUF model on CPU through llama.cpp, with the chat template of the file (or ``chat_template``).

    ``seed`` is the default sampling seed of :meth:`chat`; ``temperature=0`` is greedy decoding.
    ``n_threads`` defaults to :func:`default_threads`.
    """

    def __init__(
        self,
        path: Path,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        *,
        chat_template: str | None = None,
        verbose: bool = False,
        logits_all: bool = False,
        extra_buffers: bool | None = None,
        prefix_cache_mb: int = 256,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        llama_cpp = import_llama_cpp()
        self._lib = llama_cpp
        self.path = path
        self.n_ctx = n_ctx
        self.seed = seed
        self.n_threads = n_threads or default_threads()
        self.logits_all = logits_all
        self.extra_buffers = not cpu_has_amx() if extra_buffers is None else extra_buffers
        # KV states of prompt prefixes shared in earlier chat_batch calls (TAP's system prompts), reused
        self.prefix_cache = PrefixCache(prefix_cache_mb << 20) if prefix_cache_mb > 0 else None
        try:
            with model_params_without_extra_buffers(llama_cpp, disable=not self.extra_buffers):
                self._llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_gpu_layers=0,
                    seed=seed,
                    verbose=verbose,
                    logits_all=logits_all,
                )
        except (ValueError, RuntimeError, OSError) as e:
            raise ModelLoadError(f"llama.cpp cannot load {path}: {e}") from e
        self.metadata: dict[str, str] = dict(self._llm.metadata or {})
        self.chat_template = (
            chat_template or self.metadata.get("tokenizer.chat_template") or FALLBACK_TEMPLATE
        )
        self._template = _jinja_env().from_string(self.chat_template)
        self._vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.bos_token = self._token_text(self._llm.token_bos())
        self.eos_token = self._token_text(self._llm.token_eos())

    def _token_text(self, token: int) -> str:
        if token is None or token < 0:
            return ""
        return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt text exactly as the model sees it (generation prompt added)."""
        return self._template.render(
            messages=list(messages),
            add_generation_prompt=True,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def tokenize(self, text: str) -> list[int]:
        """Token ids of already-templated text: special tokens parsed, no BOS added (the template has it)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def tokenize_text(self, text: str) -> list[int]:
        """Token ids of plain text, with a BOS where the vocabulary asks for one (as for perplexity)."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        *,
        top_k: int = 0,
    ) -> tuple[str, int]:
        """Generate one reply: (text without special tokens, stripped; number of tokens before EOS).

        ``temperature <= 0`` is greedy. Otherwise the sampler applies temperature, then top-k (0 = off), then
        top-p, then draws with ``seed`` (default: the model's ``seed``) — transformers' order, so the two
        backends sample from the same distribution; llama-cpp-python's own chain applies top-p first.
        """
        if max_new_tokens <= 0:
            return "", 0
        lib, llm = self._lib, self._llm
        prompt = self.tokenize(self.render(messages))
        room = self.n_ctx - len(prompt)
        if room <= 0:
            raise ValueError(f"prompt is {len(prompt)} tokens, the context holds {self.n_ctx}")
        sampler = self._sampler(temperature, top_p, top_k, self.seed if seed is None else int(seed))
        out: list[int] = []
        try:
            llm.reset()
            llm.eval(prompt)
            for _ in range(min(max_new_tokens, room)):
                token = lib.llama_sampler_sample(sampler, llm.ctx, -1)
                if lib.llama_vocab_is_eog(self._vocab, token):
                    break
                out.append(token)
                if len(out) < max_new_tokens and len(out) < room:
                    llm.eval([token])
        finally:
            lib.llama_sampler_free(sampler)
        text = llm.detokenize(out).decode("utf-8", errors="replace") if out else ""
        return text.strip(), len(out)

    def chat_batch(
        self,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        *,
        top_k: int = 0,
        seeds: Sequence[int] | None = None,
        share_prefixes: bool = True,
    ) -> list[tuple[str, int]]:
        """:meth:`chat` for several conversations at once: one llama.cpp context with a sequence per
        conversation (unified KV cache), so each decoding step is one batched forward pass instead of one per
        conversation. Each sequence has its own sampler (same chain as :meth:`chat`), seeded with ``seed``
        or, given ``seeds``, conversation i with ``seeds[i]``: then a conversation's sample does not depend
        on the rest of the batch (and identical conversations can differ).

        With ``share_prefixes`` (default) a prompt prefix shared by several conversations (a system prompt,
        a whole repeated conversation) is decoded once and its KV cells shared (:mod:`.prefix`).
        Greedy outputs equal :meth:`chat`'s up to floating-point differences between batched and single
        kernels (as with batched transformers generation).
        """
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        if len(conversations) <= 1 or max_new_tokens <= 0:
            return [self.chat(c, max_new_tokens, temperature, top_p, seed if seeds is None else seeds[k], top_k=top_k)
                    for k, c in enumerate(conversations)]
        lib = self._lib
        most = int(lib.llama_max_parallel_sequences())  # llama.cpp's cap on sequences per context
        if len(conversations) > most:
            part = [None, None] if seeds is None else [seeds[:most], seeds[most:]]
            head = self.chat_batch(conversations[:most], max_new_tokens, temperature, top_p, seed, top_k=top_k,
                                   seeds=part[0], share_prefixes=share_prefixes)
            return head + self.chat_batch(conversations[most:], max_new_tokens, temperature, top_p, seed,
                                          top_k=top_k, seeds=part[1], share_prefixes=share_prefixes)
        prompts = [self.tokenize(self.render(c)) for c in conversations]
        for p in prompts:
            if not p or len(p) >= self.n_ctx:
                raise ValueError(f"prompt is {len(p)} tokens, the context holds {self.n_ctx}")
        caps = [min(max_new_tokens, self.n_ctx - len(p)) for p in prompts]
        n_seq = len(prompts)
        cache = self.prefix_cache if share_prefixes else None
        restores = cache.restore_plan(prompts) if cache is not None else []  # (sequence, tokens, KV state)
        known = [0] * n_seq
        for i, n, _ in restores:
            known[i] = n
        plan = (prefill_plan(prompts, known, MIN_CACHED_PREFIX if cache is not None else 0) if share_prefixes
                else [Level(spans=[Span(i, 0, len(p) - 1) for i, p in enumerate(prompts) if len(p) > 1])])
        total = decoded_tokens(plan) + sum(known) + n_seq + sum(caps)  # KV cells: shared prefixes count once
        # a prefill chunk holds the longest prompt; a decoding step holds one token per sequence
        n_batch = max(512, max(len(p) for p in prompts), n_seq)
        params = lib.llama_context_default_params()
        params.n_ctx = total + 64
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, 512)
        params.n_seq_max = n_seq
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = self.n_threads
        ctx = lib.llama_init_from_model(self._llm.model, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context for {n_seq} sequences of {total} tokens")
        batch = lib.llama_batch_init(n_batch, 0, 1)
        base_seed = self.seed if seed is None else int(seed)
        samplers = [self._sampler(temperature, top_p, top_k, base_seed if seeds is None else int(seeds[k]))
                    for k in range(n_seq)]
        out: list[list[int]] = [[] for _ in range(n_seq)]
        done = [c <= 0 for c in caps]
        stale = False  # a cached state llama.cpp refused: drop the cache and start again without it

        def decode(entries: list[tuple[int, int, int, bool]]) -> None:
            """entries: (token, position, sequence, wants logits)."""
            batch.n_tokens = len(entries)
            for k, (tok, pos, sid, want) in enumerate(entries):
                batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos, 1
                batch.seq_id[k][0] = sid
                batch.logits[k] = want
            rc = lib.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")

        def take(sid: int, idx: int) -> None:
            token = lib.llama_sampler_sample(samplers[sid], ctx, idx)
            if lib.llama_vocab_is_eog(self._vocab, token):
                done[sid] = True
                return
            out[sid].append(token)
            done[sid] = len(out[sid]) >= caps[sid]

        try:
            # prefill: each level's spans packed into batches of at most n_batch tokens (a span is never longer
            # than a prompt), then the level's KV copies; then every prompt's last token, with logits
            memory = lib.llama_get_memory(ctx)
            for i, _, state in restores:
                buf = (ctypes.c_ubyte * len(state)).from_buffer_copy(state)
                if lib.llama_state_seq_set_data(ctx, buf, len(state), i) == 0:
                    raise _StalePrefix
            for lv in plan:
                pending: list[tuple[int, int, int, bool]] = []
                for sp in lv.spans:
                    toks = prompts[sp.seq][sp.start : sp.end]
                    if pending and len(pending) + len(toks) > n_batch:
                        decode(pending)
                        pending = []
                    pending.extend((t, sp.start + j, sp.seq, False) for j, t in enumerate(toks))
                if pending:
                    decode(pending)
                for sid, end in lv.saves:  # only planned with a cache
                    size = lib.llama_state_seq_get_size(ctx, sid)
                    buf = (ctypes.c_ubyte * size)()
                    if cache is not None and lib.llama_state_seq_get_data(ctx, buf, size, sid) == size:
                        cache.put(prompts[sid][:end], bytes(buf))
                for src, dst, p0, p1 in lv.copies:
                    lib.llama_memory_seq_cp(memory, src, dst, p0, p1)
            decode([(p[-1], len(p) - 1, sid, True) for sid, p in enumerate(prompts)])
            for sid in range(n_seq):
                take(sid, sid)
            # decode: one new token per unfinished sequence per step
            while True:
                live = [sid for sid in range(n_seq) if not done[sid]]
                if not live:
                    break
                decode([(out[sid][-1], len(prompts[sid]) + len(out[sid]) - 1, sid, True) for sid in live])
                for k, sid in enumerate(live):
                    take(sid, k)
        except _StalePrefix:
            stale = True
        finally:
            for smp in samplers:
                lib.llama_sampler_free(smp)
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)
        if stale and self.prefix_cache is not None:
            self.prefix_cache = PrefixCache(self.prefix_cache.max_bytes)
            return self.chat_batch(conversations, max_new_tokens, temperature, top_p, seed, top_k=top_k, seeds=seeds,
                                   share_prefixes=share_prefixes)
        return [
            ((self._llm.detokenize(o).decode("utf-8", errors="replace") if o else "").strip(), len(o)) for o in out
        ]

    @property
    def n_vocab(self) -> int:
        """Rows of the output layer: the width of every :meth:`token_logits` row."""
        return int(self._llm.n_vocab())

    def token_logits(self, ids: Sequence[int]) -> Any:
        """Next-token logits at every position of ``ids`` (a float32 array, len(ids) × n_vocab).

        Row t is the distribution over token t+1 given ids[:t+1], as transformers' ``logits[0, t]``, so the
        two can be compared position by position (perplexity, KL to an HF parent). Needs ``logits_all=True``.
        """
        import numpy as np

        if not self.logits_all:
            raise ValueError("token_logits needs a model opened with logits_all=True")
        if not ids:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        if len(ids) > self.n_ctx:
            raise ValueError(f"{len(ids)} tokens do not fit the context of {self.n_ctx}")
        llm = self._llm
        llm.reset()
        llm.eval(list(ids))
        return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)

    def _sampler(self, temperature: float, top_p: float, top_k: int, seed: int) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(float(temperature)))
        if top_k > 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(int(top_k)))
        if top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(float(top_p), 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""llama.cpp backend: serves GGUF variants (``…>quantize:method=gguf,type=Q4_K_M``, ``gguf:…,native=true``).

Conversations are decoded ``batch`` at a time (default 16) as parallel sequences of one llama.cpp context
(``LlamaCppModel.chat_batch``): one forward pass per step for the whole batch. ``batch=1`` decodes one
conversation at a time. benchmarks/generation.py compares both with transformers.
"""

from __future__ import annotations

import time
from typing import Any

from safetydrift.context import Context
from safetydrift.errors import UnsupportedError
from safetydrift.registry import backends
from safetydrift.spec import ComponentSpec
from safetydrift.types import Conversation, Generation, GenerationConfig, ResolvedModel, with_system_prompt


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> None:
        spec.check_keys({"n_ctx", "threads", "batch"})
        if model.kind != "gguf" or model.path is None:
            raise UnsupportedError(f"the llama.cpp backend serves GGUF files, not {model.kind} ({model.spec})")
        from safetydrift.backends.llamacpp_engine import LlamaCppModel

        self.n_ctx = spec.get_int("n_ctx", 2048) or 2048
        self.threads = spec.get_int("threads")
        self.batch_size = spec.get_int("batch", 16) or 16
        self.resolved = model
        self.llm = LlamaCppModel(model.path, n_ctx=self.n_ctx, n_threads=self.threads)

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, "n_ctx": self.n_ctx, "threads": self.llm.n_threads, "batch": self.batch_size,
                "gguf": str(self.resolved.path)}

    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = [with_system_prompt(c, config.system_prompt) for c in conversations[start : start + self.batch_size]]
            t0 = time.time()
            try:
                res = self.llm.chat_batch(chunk, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                          top_p=config.top_p, seed=config.seed)
            except Exception:  # find the failing conversation(s): one at a time, each failure its own error
                out.extend(self._one_by_one(chunk, config))
                continue
            per = (time.time() - t0) / len(chunk)
            out.extend(Generation(text=text, n_tokens=n, latency_s=per) for text, n in res)
        return out

    def _one_by_one(self, chunk: list[list[dict[str, Any]]], config: GenerationConfig) -> list[Generation]:
        out = []
        for msgs in chunk:
            t0 = time.time()
            try:
                text, n = self.llm.chat(msgs, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                        top_p=config.top_p, seed=config.seed)
            except Exception as e:  # one failed conversation is an error sample, not a crashed run
                out.append(Generation(error=f"{type(e).__name__}: {e}"))
                continue
            out.append(Generation(text=text, n_tokens=n, latency_s=time.time() - t0))
        return out


@backends.register("llamacpp", help="GGUF files via llama.cpp (CPU)")
def llamacpp(model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> LlamaCppBackend:
    return LlamaCppBackend(model, spec, ctx)

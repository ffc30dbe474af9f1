"""llama.cpp backend: serves GGUF variants (``…>quantize:method=gguf,type=Q4_K_M``, ``gguf:…,native=true``).

Conversations are decoded ``batch`` at a time (default 16) as parallel sequences of one llama.cpp context
(:meth:`safetydrift.llamacpp.LlamaCppModel.chat_batch`): one forward pass per step for the whole batch.
``batch=1`` decodes one conversation at a time. benchmarks/generation.py compares both with transformers.
A prompt prefix shared within a batch (a system prompt, a repeated conversation) is decoded once.
``generate_seeded`` samples each conversation from its own seed (a sampler per sequence), so a
conversation's text does not depend on the rest of its batch (TAP's lockstep search relies on it).
A model that was dequantized from a GGUF file (the shipped models, ``gguf:<path>`` without ``native``)
is served from that file as is, so such a model can run here when asked (``--backend llamacpp``,
``tap:attacker_backend=llamacpp``).
The llama.cpp route itself (conversion, quantization, the model) is the :mod:`safetydrift.llamacpp` package.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.backends.base import LocalBackend
from safetydrift.errors import UnsupportedError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import backends
from safetydrift.spec import ComponentSpec
from safetydrift.types import Conversation, Generation, GenerationConfig, ResolvedModel, with_system_prompt

if TYPE_CHECKING:
    from safetydrift.context import Context
    from safetydrift.types import PromptFit  # annotations only


@dataclass(frozen=True, kw_only=True)
class LlamaCppParams(Params):
    n_ctx: int = field(default=2048, metadata=p("context window in tokens", ge=1))
    threads: int | None = field(default=None, metadata=p("CPU threads (default: the cores that are free)", ge=1))
    batch: int = field(default=16, metadata=p("conversations decoded together as parallel sequences", ge=1))


class LlamaCppBackend(LocalBackend):
    name = "llamacpp"
    Params = LlamaCppParams

    def __init__(self, model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> None:
        self.params = from_spec(LlamaCppParams, spec)
        path = gguf_file(model)
        if path is None:
            raise UnsupportedError(f"the llama.cpp backend serves GGUF files, not {model.kind} ({model.spec})")
        from safetydrift.llamacpp import LlamaCppModel

        self.n_ctx = self.params.n_ctx
        self.threads = self.params.threads
        self.batch_size = self.params.batch
        self.resolved = model
        self.gguf = path
        self.llm = LlamaCppModel(path, n_ctx=self.n_ctx, n_threads=self.threads)

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, "n_ctx": self.n_ctx, "threads": self.llm.n_threads, "batch": self.batch_size,
                "gguf": str(self.gguf)}

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def fit(self, conversations: list[Conversation], config: GenerationConfig, reserve: int = 1) -> list[PromptFit]:
        from safetydrift.backends.context_window import fit_prompts

        texts = [self.llm.render(with_system_prompt(c, config.system_prompt)) for c in conversations]
        return fit_prompts(texts, lambda ts: [len(self.llm.tokenize(t)) for t in ts], self.n_ctx, reserve)

    def _generate_all(self, conversations: list[Conversation], config: GenerationConfig,
                      seeds: list[int] | None = None) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = [with_system_prompt(c, config.system_prompt) for c in conversations[start : start + self.batch_size]]
            chunk_seeds = None if seeds is None else seeds[start : start + self.batch_size]
            t0 = time.time()
            try:
                res = self.llm.chat_batch(chunk, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                          top_p=config.top_p, seed=config.seed, seeds=chunk_seeds)
            except Exception:  # find the failing conversation(s): one at a time, each failure its own error
                out.extend(self._one_by_one(chunk, config, chunk_seeds))
                continue
            per = (time.time() - t0) / len(chunk)
            out.extend(Generation(text=text, n_tokens=n, latency_s=per) for text, n in res)
        return out

    def _one_by_one(self, chunk: list[list[dict[str, Any]]], config: GenerationConfig,
                    seeds: list[int] | None = None) -> list[Generation]:
        out = []
        for k, msgs in enumerate(chunk):
            t0 = time.time()
            try:
                text, n = self.llm.chat(msgs, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                        top_p=config.top_p, seed=config.seed if seeds is None else seeds[k])
            except Exception as e:  # one failed conversation is an error sample, not a crashed run
                out.append(Generation(error=f"{type(e).__name__}: {e}"))
                continue
            out.append(Generation(text=text, n_tokens=n, latency_s=time.time() - t0))
        return out


def gguf_file(model: ResolvedModel) -> Path | None:
    """The GGUF file that holds exactly ``model``'s weights: a GGUF model's own file, or the file a
    source-level checkpoint was dequantized from (``provenance["gguf"]``: shipped models, ``gguf:`` without
    ``native``); None for anything else (a built variant's checkpoint has no such file)."""
    if model.kind == "gguf":
        return model.path
    source = model.provenance.get("gguf") if model.kind == "hf" else None
    if source and Path(source).is_file():
        return Path(source)
    return None


@backends.register("llamacpp", help="GGUF files via llama.cpp (CPU)")
@with_params(LlamaCppParams)
def llamacpp(model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> LlamaCppBackend:
    return LlamaCppBackend(model, spec, ctx)

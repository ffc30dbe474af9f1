"""transformers backend: batched, left-padded generation with the model's own chat template.

``generate`` samples a batch from one global torch seed, so a sampled conversation's text depends on the
rest of its batch. ``generate_seeded`` gives each row its own ``torch.Generator`` (:func:`seeded_sampler`):
a conversation's sample then depends only on its own seed (TAP's lockstep search relies on it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.backends.base import LocalBackend
from safetydrift.errors import ModelLoadError, UnsupportedError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import backends
from safetydrift.spec import ComponentSpec
from safetydrift.types import (
    Conversation,
    Generation,
    GenerationConfig,
    PromptFit,
    ResolvedModel,
    with_system_prompt,
)

if TYPE_CHECKING:
    from safetydrift.context import Context

FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def load_hf(path: Path, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """Load (model, tokenizer) from a checkpoint directory, in eval mode, with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    except Exception as e:  # many exception types; the user needs one line
        raise ModelLoadError(f"cannot load model from {path}: {type(e).__name__}: {e}") from e
    model.to(device).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        tok.chat_template = FALLBACK_TEMPLATE
    return model, tok


def model_context_length(config: Any, tok: Any) -> int | None:
    """The positions a checkpoint was built for: its config's, else its tokenizer's (if it knows one)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(text_config, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    v = getattr(tok, "model_max_length", None)  # tokenizers say 1e30 when they do not know
    return v if isinstance(v, int) and 0 < v < 10**8 else None


def render_chat(tok: Any, conv: Conversation, system_prompt: str | None) -> str:
    """The prompt text exactly as the model sees it (one place, shared with training and LogitLens)."""
    return tok.apply_chat_template(with_system_prompt(conv, system_prompt), tokenize=False,
                                   add_generation_prompt=True)


@dataclass(frozen=True, kw_only=True)
class TransformersParams(Params):
    # 64: on a 2-core CPU, 60 prompts × 24 tokens take 9.1 s at batch 64 against 13.9 s at 16 (fewer
    # sequential decode loops); set batch= lower for big models on small GPUs
    batch: int = field(default=64, metadata=p("conversations per generate() call", ge=1))
    dtype: str = field(default="float32", metadata=p("torch dtype of the weights (float32, bfloat16, …)"))
    device: str | None = field(default=None, metadata=p("torch device (default: the run's)"))
    threads: int | None = field(default=None, metadata=p("torch CPU threads (default: torch's)", ge=1))


class TransformersBackend(LocalBackend):
    name = "transformers"
    Params = TransformersParams

    seeds_only_when_sampling = True  # greedy rows need no generator

    def __init__(self, model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> None:
        self.params = from_spec(TransformersParams, spec)
        if model.kind != "hf" or model.path is None:
            raise UnsupportedError(f"the transformers backend needs a local checkpoint, not {model.kind}")
        import torch

        if self.params.threads is not None:
            torch.set_num_threads(self.params.threads)
        self.resolved = model
        self.batch_size = self.params.batch
        self.device = self.params.device or ctx.device or "cpu"
        self.dtype = self.params.dtype
        self.model, self.tok = load_hf(model.path, self.device, self.dtype)
        self.tok.padding_side = "left"
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tok.eos_token_id is not None:
            eos_ids.add(self.tok.eos_token_id)
        self.eos_ids = sorted(eos_ids)
        self.context_length = model_context_length(self.model.config, self.tok)

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.dtype, "device": self.device, "batch": self.batch_size}

    def fit(self, conversations: list[Conversation], config: GenerationConfig, reserve: int = 1) -> list[PromptFit]:
        from safetydrift.backends.context_window import fit_prompts

        texts = [render_chat(self.tok, c, config.system_prompt) for c in conversations]
        return fit_prompts(texts, self._count, self.context_length, reserve)

    def _count(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]

    def _generate_all(self, conversations: list[Conversation], config: GenerationConfig,
                      seeds: list[int] | None = None) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(conversations), self.batch_size):
            rows = None if seeds is None else seeds[start : start + self.batch_size]
            out.extend(self._generate_batch(conversations[start : start + self.batch_size], config, rows))
        return out

    def _generate_batch(self, convs: list[Conversation], config: GenerationConfig,
                        seeds: list[int] | None = None) -> list[Generation]:
        import torch

        t0 = time.time()
        try:
            texts = [render_chat(self.tok, c, config.system_prompt) for c in convs]
            enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            torch.manual_seed(config.seed)
            sample = config.temperature > 0
            kwargs: dict[str, Any] = {
                "max_new_tokens": config.max_new_tokens,
                "do_sample": sample,
                "eos_token_id": self.eos_ids or None,
                "pad_token_id": self.tok.pad_token_id,
            }
            if sample and seeds is not None:  # greedy picks the token each row's own generator drew
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                              logits_processor=seeded_sampler(self.model.generation_config, config, seeds))
            elif sample:
                kwargs.update(temperature=config.temperature, top_p=config.top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                seqs = self.model.generate(**enc, **kwargs)
        except Exception as e:  # a failed batch is an error on each of its samples, never a response
            msg = f"{type(e).__name__}: {e}"
            return [Generation(error=msg) for _ in convs]
        new = seqs[:, enc["input_ids"].shape[1] :]
        dt = (time.time() - t0) / max(len(convs), 1)
        gens = []
        for row in new:
            ids = row.tolist()
            n = len(ids)
            for i, t in enumerate(ids):
                if t in self.eos_ids or t == self.tok.pad_token_id:
                    n = i
                    break
            text = self.tok.decode(ids[:n], skip_special_tokens=True).strip()
            gens.append(Generation(text=text, n_tokens=n, latency_s=dt))
        return gens


def seeded_sampler(model_config: Any, config: GenerationConfig, seeds: list[int]) -> Any:
    """A logits processor that samples row i with its own ``torch.Generator(seeds[i])`` and leaves only the
    drawn token, so that greedy decoding emits it. The distribution is the one ``generate`` samples from:
    temperature, then top-k (the model's setting, else transformers' default 50), top-p and min-p, applied
    after the model's other processors (repetition penalty, …), as transformers orders them."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    top_k = getattr(model_config, "top_k", None)
    top_k = 50 if top_k is None else top_k
    min_p = getattr(model_config, "min_p", None)
    warpers: list[Any] = []
    if config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=config.top_p))
    if min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=min_p))
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for w in warpers:
                scores = w(input_ids, scores)
            probs = torch.softmax(scores.float(), dim=-1).cpu()
            picks = [int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(generators)]
            out = torch.full_like(scores, float("-inf"))
            rows = torch.arange(len(picks), device=scores.device)
            out[rows, torch.tensor(picks, device=scores.device)] = 0.0
            return out

    return LogitsProcessorList([RowSampler()])


@backends.register("transformers", help="local checkpoint via transformers (batched, chat template)")
@with_params(TransformersParams)
def transformers_backend(model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> TransformersBackend:
    return TransformersBackend(model, spec, ctx)

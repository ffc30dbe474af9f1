"""vLLM backend for GPU users: large models and TAP at paper scale. Needs CUDA and ``pip install vllm``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safetydrift.backends.base import LocalBackend
from safetydrift.context import Context
from safetydrift.errors import UnsupportedError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import backends
from safetydrift.spec import ComponentSpec
from safetydrift.types import Conversation, Generation, GenerationConfig, ResolvedModel, with_system_prompt

if TYPE_CHECKING:
    from safetydrift.types import PromptFit  # annotations only


@dataclass(frozen=True, kw_only=True)
class VLLMParams(Params):
    gpu_memory_utilization: float = field(default=0.85, metadata=p("fraction of GPU memory vLLM may use", gt=0, le=1))
    dtype: str = field(default="auto", metadata=p("weights dtype (auto, float16, bfloat16, …)"))
    tensor_parallel: int = field(default=1, metadata=p("GPUs to shard the model over", ge=1))


class VLLMBackend(LocalBackend):
    name = "vllm"
    Params = VLLMParams

    def __init__(self, model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> None:
        self.params = from_spec(VLLMParams, spec)
        if model.kind != "hf" or model.path is None:
            raise UnsupportedError(f"the vllm backend needs a local checkpoint, not {model.kind}")
        import torch

        if not torch.cuda.is_available():
            raise UnsupportedError("the vllm backend needs a CUDA GPU (use the transformers or llamacpp backend on CPU)")
        try:
            from vllm import LLM
        except ImportError:
            raise UnsupportedError("the vllm backend needs vLLM: pip install 'safetydrift[vllm]'") from None
        self.settings = {
            "gpu_memory_utilization": self.params.gpu_memory_utilization,
            "dtype": self.params.dtype,
            "tensor_parallel_size": self.params.tensor_parallel,
        }
        self.llm = LLM(model=str(model.path), **self.settings)
        self.context_length: int | None = self.llm.llm_engine.model_config.max_model_len

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, **self.settings}

    def fit(self, conversations: list[Conversation], config: GenerationConfig, reserve: int = 1) -> list[PromptFit]:
        from safetydrift.backends.context_window import fit_prompts

        tok = self.llm.get_tokenizer()
        texts = [tok.apply_chat_template(with_system_prompt(c, config.system_prompt), tokenize=False,
                                         add_generation_prompt=True) for c in conversations]

        def count(ts: list[str]) -> list[int]:
            return [len(ids) for ids in tok(ts, add_special_tokens=False)["input_ids"]]

        return fit_prompts(texts, count, self.context_length, reserve)

    def _generate_all(self, conversations: list[Conversation], config: GenerationConfig,
                      seeds: list[int] | None = None) -> list[Generation]:
        from vllm import SamplingParams

        def sampling(seed: int) -> Any:
            return SamplingParams(max_tokens=config.max_new_tokens, temperature=config.temperature,
                                  top_p=config.top_p, seed=seed)

        params = sampling(config.seed) if seeds is None else [sampling(s) for s in seeds]
        convs = [with_system_prompt(c, config.system_prompt) for c in conversations]
        t0 = time.time()
        try:
            outs = self.llm.chat(convs, params, use_tqdm=False)
        except Exception as e:
            return [Generation(error=f"{type(e).__name__}: {e}") for _ in conversations]
        dt = (time.time() - t0) / max(len(conversations), 1)
        return [Generation(text=o.outputs[0].text.strip(), n_tokens=len(o.outputs[0].token_ids), latency_s=dt) for o in outs]


@backends.register("vllm", help="vLLM on a CUDA GPU")
@with_params(VLLMParams)
def vllm(model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> VLLMBackend:
    return VLLMBackend(model, spec, ctx)

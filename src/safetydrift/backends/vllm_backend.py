"""vLLM backend for GPU users: large models and TAP at paper scale. Needs CUDA and ``pip install vllm``."""

from __future__ import annotations

import time
from typing import Any

from safetydrift.context import Context
from safetydrift.errors import UnsupportedError
from safetydrift.registry import backends
from safetydrift.spec import ComponentSpec
from safetydrift.types import Conversation, Generation, GenerationConfig, ResolvedModel, with_system_prompt


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> None:
        spec.check_keys({"gpu_memory_utilization", "dtype", "tensor_parallel"})
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
            "gpu_memory_utilization": spec.get_float("gpu_memory_utilization", 0.85),
            "dtype": spec.get_str("dtype", "auto"),
            "tensor_parallel_size": spec.get_int("tensor_parallel", 1),
        }
        self.llm = LLM(model=str(model.path), **self.settings)

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name, **self.settings}

    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=config.max_new_tokens, temperature=config.temperature,
                                top_p=config.top_p, seed=config.seed)
        convs = [with_system_prompt(c, config.system_prompt) for c in conversations]
        t0 = time.time()
        try:
            outs = self.llm.chat(convs, params, use_tqdm=False)
        except Exception as e:
            return [Generation(error=f"{type(e).__name__}: {e}") for _ in conversations]
        dt = (time.time() - t0) / max(len(conversations), 1)
        return [Generation(text=o.outputs[0].text.strip(), n_tokens=len(o.outputs[0].token_ids), latency_s=dt) for o in outs]


@backends.register("vllm", help="vLLM on a CUDA GPU")
def vllm(model: ResolvedModel, spec: ComponentSpec, ctx: Context) -> VLLMBackend:
    return VLLMBackend(model, spec, ctx)

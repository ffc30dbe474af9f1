"""``quantize``: post-training weight quantization of a checkpoint.

``quantize:method=rtn,bits=4,group=128`` (default)
    Round-to-nearest, symmetric, group-wise, in torch. For each row of a selected weight matrix and each
    group of ``group`` consecutive input columns (``group=0``: one group per row)::

        s = max|w| / (2^(b−1) − 1)          (stored as fp16, and the fp16 value is the one used)
        q = clamp(round(w / s), −(2^(b−1) − 1), 2^(b−1) − 1)
        ŵ = q · s

    The checkpoint holds the *fake-quantized* weights ŵ (fp32, a normal HF checkpoint every backend
    loads); the real packed size (b bits per weight + one fp16 scale per group) is computed and
    recorded as ``packed_bytes`` / ``bits_per_weight``. ``bits`` is 2..8 (8 and 4 are the usual ones).
``quantize:method=torchao``
    int8 weight-only (per-row symmetric) through torchao's ``quantize_(Int8WeightOnlyConfig())``; the
    quantized tensors are dequantized back into an fp32 checkpoint, so the variant captures torchao's
    rounding exactly while any backend can serve it. Needs ``pip install torchao`` (0.18 works on CPU).
``quantize:method=gptq|awq,bits=4,group=128``
    GPTQ (via ``gptqmodel``) or AWQ (via ``autoawq``) with calibration text; these kernels need a CUDA
    GPU, so on a CPU-only machine the transform stops with an ``UnsupportedError``.
``quantize:method=gguf,type=Q4_K_M``
    llama.cpp: HF → GGUF f16 → ``llama-quantize`` to one of Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K Q8_0; the
    variant is a GGUF file (served by the llama.cpp backend).

Which matrices (rtn, torchao): ``include=``/``exclude=`` ``+``-separated regexes on parameter names,
default :data:`safetydrift.variants.checkpoint.DEFAULT_INCLUDE` (the attention and MLP projections of the
transformer blocks; embeddings, norms and the LM head stay in full precision).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from safetydrift.context import Context
from safetydrift.errors import SpecError, UnsupportedError
from safetydrift.params import Params, p
from safetydrift.registry import transforms
from safetydrift.spec import ComponentSpec
from safetydrift.types import ResolvedModel
from safetydrift.variants.base import BuildResult, Transform
from safetydrift.variants.checkpoint import (
    DEFAULT_INCLUDE,
    compile_patterns,
    save_checkpoint,
    select_matrices,
)

if TYPE_CHECKING:
    import torch

Method = Literal["rtn", "torchao", "gptq", "awq", "gguf"]
METHODS: tuple[str, ...] = get_args(Method)
GGUF_TYPES = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
HF_SUBDIR = "hf"

# settings each method understands (anything else is a SpecError, not a silent default)
_KEYS: dict[str, frozenset[str]] = {
    "rtn": frozenset({"method", "bits", "group", "include", "exclude"}),
    "torchao": frozenset({"method", "bits", "include", "exclude"}),
    "gptq": frozenset({"method", "bits", "group", "calib", "seed"}),
    "awq": frozenset({"method", "bits", "group", "calib", "seed"}),
    "gguf": frozenset({"method", "type"}),
}


# ------------------------------------------------------------------------------------ the math

def rtn_quantize(w: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, int]:
    """Symmetric round-to-nearest, one fp16 scale per (row, group of columns).

    Returns (ŵ in fp32 with w's shape, packed size in bytes: ⌈n·b/8⌉ codes + 2 bytes per scale).
    """
    import torch

    qmax = (1 << (bits - 1)) - 1
    rows, cols = w.shape
    g = cols if group <= 0 else group
    pad = (-cols) % g
    x = torch.nn.functional.pad(w.detach().float(), (0, pad)).reshape(rows, -1, g)  # zeros never raise max|w|
    scale = (x.abs().amax(-1, keepdim=True) / qmax).half().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(x / scale), -qmax, qmax)
    w_hat = (q * scale).reshape(rows, -1)[:, :cols].contiguous()
    packed = math.ceil(rows * cols * bits / 8) + 2 * scale.numel()
    return w_hat, packed


# -------------------------------------------------------------------------------- the transform

@dataclass(frozen=True, kw_only=True)
class QuantizeParams(Params):
    method: Method = field(default="rtn", metadata=p("how to quantize"))
    bits: int | None = field(default=None, metadata=p("bits per weight (default 4; torchao: 8 only)", ge=2, le=8))
    group: int = field(default=128, metadata=p("input columns per scale (0 = one group per row)", ge=0))
    include: tuple[str, ...] = field(default=DEFAULT_INCLUDE, metadata=p("regexes of the matrices to quantize"))
    exclude: tuple[str, ...] = field(default=(), metadata=p("regexes of matrices to leave alone"))
    type: str = field(default="Q4_K_M", metadata=p("method=gguf: the llama.cpp type", choices=GGUF_TYPES))
    calib: int = field(default=128, metadata=p("gptq/awq: calibration texts", ge=1))
    seed: int = field(default=0, metadata=p("gptq/awq: calibration sampling seed", ge=0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits is None:  # the default depends on the method
            object.__setattr__(self, "bits", 8 if self.method == "torchao" else 4)
        if self.method == "torchao" and self.bits != 8:
            raise SpecError("quantize: method=torchao does int8 weight-only only (bits=8)")


@transforms.register("quantize", help="quantize[:method=rtn|torchao|gptq|awq|gguf,bits=4,group=128,type=Q4_K_M]")
class Quantize(Transform):
    """Weight quantization: RTN (torch), torchao int8, GPTQ/AWQ (CUDA), or llama.cpp GGUF types."""

    name = "quantize"
    Params = QuantizeParams
    params: QuantizeParams

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        super().__init__(spec, ctx)
        method = self.params.method
        extra = sorted(set(spec.args) - _KEYS[method])
        if extra:
            raise SpecError(
                f"quantize: '{extra[0]}' does not apply to method={method} "
                f"(known: {', '.join(sorted(_KEYS[method] - {'method'}))})"
            )
        compile_patterns(self.params.include, "quantize include")
        compile_patterns(self.params.exclude, "quantize exclude")

    def key_material(self, lineage: list[ResolvedModel]) -> dict[str, Any]:
        if self.params.method in ("gptq", "awq"):
            from safetydrift.hashing import sha256_json
            from safetydrift.variants.checkpoint import calibration_items

            return {"calibration_sha256": sha256_json(calibration_items(self.params.calib, self.params.seed))}
        return {}

    def build(self, parent: ResolvedModel, out_dir: Path, lineage: list[ResolvedModel]) -> BuildResult:
        if self.params.method == "rtn":
            return self._rtn(parent, out_dir)
        if self.params.method == "torchao":
            return self._torchao(parent, out_dir)
        if self.params.method in ("gptq", "awq"):
            return self._gpu_method(parent, out_dir)
        return self._gguf(parent, out_dir)

    # ---------------------------------------------------------------------------------- rtn
    def _rtn(self, parent: ResolvedModel, out_dir: Path) -> BuildResult:
        import torch

        from safetydrift.backends.transformers_backend import load_hf

        model, _ = load_hf(parent.path, self.ctx.device)
        params = dict(model.named_parameters())
        names = self._select(params, parent)
        packed = n_el = 0
        err2 = norm2 = 0.0
        with torch.no_grad():
            for n in names:
                w = params[n]
                w_hat, nbytes = rtn_quantize(w, self.params.bits, self.params.group)  # type: ignore[arg-type]
                err2 += float((w.float() - w_hat).pow(2).sum())
                norm2 += float(w.float().pow(2).sum())
                w.copy_(w_hat)
                packed += nbytes
                n_el += w.numel()
        hf_dir = save_checkpoint(model, Path(parent.path), out_dir / HF_SUBDIR)
        prov = self._size_provenance(names, n_el, packed)
        prov.update(
            scheme="symmetric round-to-nearest, fp16 absmax scale per (row, group)",
            bits=self.params.bits,
            group=self.params.group,
            relative_error=math.sqrt(err2 / norm2) if norm2 else 0.0,
        )
        return BuildResult(kind="hf", path=hf_dir, provenance=prov)

    # ------------------------------------------------------------------------------- torchao
    def _torchao(self, parent: ResolvedModel, out_dir: Path) -> BuildResult:
        try:
            import torchao
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError:
            raise UnsupportedError(
                "quantize:method=torchao needs torchao, which is not installed (pip install torchao)"
            ) from None
        import torch

        from safetydrift.backends.transformers_backend import load_hf

        model, _ = load_hf(parent.path, self.ctx.device)
        names = self._select(dict(model.named_parameters()), parent)
        modules = {n.rpartition(".")[0] for n in names}
        quantize_(model, Int8WeightOnlyConfig(),
                  filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn in modules)
        packed = n_el = 0
        with torch.no_grad():
            for path in sorted(modules):
                mod = model.get_submodule(path)
                qw = mod.weight
                if not hasattr(qw, "dequantize"):
                    raise UnsupportedError(f"torchao left {path}.weight unquantized (not an nn.Linear?)")
                data_names = qw.__tensor_flatten__()[0]  # e.g. qdata (int8), scale, zero_point
                packed += sum(getattr(qw, d).numel() * getattr(qw, d).element_size() for d in data_names)
                n_el += qw.numel()
                mod.weight = torch.nn.Parameter(qw.dequantize().float().contiguous(), requires_grad=False)
        hf_dir = save_checkpoint(model, Path(parent.path), out_dir / HF_SUBDIR)
        prov = self._size_provenance(names, n_el, packed)
        prov.update(scheme="torchao Int8WeightOnlyConfig, dequantized to fp32", bits=8,
                    torchao=getattr(torchao, "__version__", None))
        return BuildResult(kind="hf", path=hf_dir, provenance=prov)

    # ------------------------------------------------------------------------------ gptq/awq
    def _gpu_method(self, parent: ResolvedModel, out_dir: Path) -> BuildResult:
        import torch

        label = self.params.method.upper()
        if not torch.cuda.is_available():
            raise UnsupportedError(f"quantize:method={self.params.method}: {label} needs a CUDA GPU, and this machine has none")
        from safetydrift.backends.transformers_backend import load_hf
        from safetydrift.variants.checkpoint import calibration_items, render_calibration

        _, tok = load_hf(parent.path, "cpu")  # only for the chat template of the calibration text
        texts = [render_calibration(x, tok) for x in calibration_items(self.params.calib, self.params.seed)]
        hf_dir = out_dir / HF_SUBDIR
        group = self.params.group if self.params.group else -1
        if self.params.method == "gptq":
            try:
                from gptqmodel import GPTQModel, QuantizeConfig
            except ImportError:
                raise UnsupportedError("quantize:method=gptq needs gptqmodel (pip install gptqmodel)") from None
            model = GPTQModel.load(str(parent.path), QuantizeConfig(bits=self.params.bits, group_size=group))
            model.quantize(texts)
            model.save(str(hf_dir))
        else:
            try:
                from awq import AutoAWQForCausalLM
            except ImportError:
                raise UnsupportedError("quantize:method=awq needs autoawq (pip install autoawq)") from None
            model = AutoAWQForCausalLM.from_pretrained(str(parent.path))
            model.quantize(tok, quant_config={"w_bit": self.params.bits, "q_group_size": group, "zero_point": True,
                                              "version": "GEMM"}, calib_data=texts)
            model.save_quantized(str(hf_dir))
        tok.save_pretrained(str(hf_dir))
        bits, cols = self.params.bits or 4, self.params.group
        return BuildResult(kind="hf", path=hf_dir, provenance={
            "method": self.params.method, "bits": bits, "group": cols, "calibration_texts": len(texts),
            "bits_per_weight": bits + (16 / cols if cols else 0),
        })

    # ---------------------------------------------------------------------------------- gguf
    def _gguf(self, parent: ResolvedModel, out_dir: Path) -> BuildResult:
        try:
            engine = importlib.import_module("safetydrift.llamacpp")
        except ImportError as e:
            raise UnsupportedError(f"quantize:method=gguf needs the llama.cpp route, which is unavailable: {e}") from None
        f16 = out_dir / "model-f16.gguf"
        dst = out_dir / f"model-{self.params.type}.gguf"
        engine.convert_hf_to_gguf(Path(parent.path), f16, outtype="f16")
        engine.quantize_gguf(f16, dst, self.params.type)
        if f16.exists() and f16 != dst:
            f16.unlink()  # the intermediate is as big as the model and can be remade
        return BuildResult(kind="gguf", path=dst, provenance={
            "method": "gguf", "type": self.params.type, "via": "convert_hf_to_gguf (f16) + llama_model_quantize",
        })

    # ------------------------------------------------------------------------------- helpers
    def _select(self, params: dict[str, Any], parent: ResolvedModel) -> list[str]:
        names = select_matrices(params.items(), self.params.include, self.params.exclude)
        if not names:
            raise SpecError(f"quantize: no 2-D weights match include={'+'.join(self.params.include)} in {parent.spec}")
        return names

    def _size_provenance(self, names: list[str], n_el: int, packed: int) -> dict[str, Any]:
        return {
            "method": self.params.method,
            "include": self.params.include,
            "exclude": self.params.exclude,
            "n_matrices": len(names),
            "n_elements": n_el,
            "packed_bytes": packed,
            "fp16_bytes": 2 * n_el,
            "bits_per_weight": 8 * packed / n_el if n_el else None,
            "checkpoint": "fake-quantized (dequantized) fp32 weights",
        }

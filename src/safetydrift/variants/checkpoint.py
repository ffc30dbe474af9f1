"""What the weight transforms (``bitdelta``, ``quantize``) share: which matrices they touch, the
calibration text they feed a model, and how they write the checkpoint they build.

Every built checkpoint is a normal transformers directory, so every backend can load it; tokenizer files
and chat template are copied byte for byte from the parent, so a variant is served exactly like it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.errors import SpecError

if TYPE_CHECKING:
    import torch

#: Attention and MLP projections inside numbered blocks, for Llama/Qwen/Mistral/Gemma (``layers.N``),
#: GPT-2 (``h.N``, c_attn/c_proj/c_fc), GPT-NeoX/Falcon (dense, query_key_value), BERT-likes
#: (``layer.N``, query/key/value/dense) and Phi (fc1/fc2). Only 2-D tensors are ever selected.
DEFAULT_INCLUDE: tuple[str, ...] = (
    r"(?:^|\.)(?:layers?|h|blocks?)\.\d+\..*(?:proj|fc|dense|query|key|value|c_attn|c_proj|c_fc|qkv)[^.]*\.weight$",
)
#: A calibration text that is a question/answer pair, rendered as a chat turn.
_QA = re.compile(r"^Question:\s*(?P<q>.+?)\nAnswer:\s*(?P<a>.+)$", re.S)


# ------------------------------------------------------------------------------ choosing matrices

def compile_patterns(patterns: Iterable[str], what: str) -> list[re.Pattern[str]]:
    """Compiled regexes; a bad one is a SpecError naming the setting (``what``), raised before any build."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise SpecError(f"{what}: bad regex {p!r}: {e}") from None
    return out


def select_matrices(
    named: Iterable[tuple[str, Any]], include: Sequence[str] = DEFAULT_INCLUDE, exclude: Sequence[str] = ()
) -> list[str]:
    """Names of the 2-D tensors that match any ``include`` regex and no ``exclude`` regex, in order."""
    inc = compile_patterns(include, "include")
    exc = compile_patterns(exclude, "exclude")
    return [
        name
        for name, t in named
        if t.ndim == 2 and any(r.search(name) for r in inc) and not any(r.search(name) for r in exc)
    ]


# ----------------------------------------------------------------------------------- calibration

def calibration_items(n: int, seed: int) -> list[Any]:
    """``n`` benign calibration texts in a seeded order (``datasets.pools.calibration_texts``).

    Hashed into the cache key of a healed BitDelta or a GPTQ/AWQ build, so the texts are data, not code.
    """
    from safetydrift.datasets.pools import calibration_texts

    return list(calibration_texts(n, seed))


def render_calibration(item: Any, tok: Any) -> str:
    """Plain text stays plain; instructions (dicts, message lists, "Question:/Answer:" pairs) go through
    the tokenizer's chat template, so healing sees the format the model is served in."""
    if isinstance(item, str):
        m = _QA.match(item.strip())
        if not m:
            return item
        msgs = [{"role": "user", "content": m["q"].strip()}, {"role": "assistant", "content": m["a"].strip()}]
    elif isinstance(item, dict) and "messages" in item:
        msgs = list(item["messages"])
    elif isinstance(item, dict) and ("prompt" in item or "instruction" in item):
        msgs = [{"role": "user", "content": item.get("prompt") or item["instruction"]}]
        answer = item.get("response") or item.get("answer") or item.get("output")
        if answer:
            msgs.append({"role": "assistant", "content": answer})
    elif isinstance(item, dict) and "text" in item:
        return str(item["text"])
    elif isinstance(item, list):
        msgs = list(item)
    else:
        raise TypeError(f"cannot use {type(item).__name__} as calibration text")
    ends_with_answer = msgs[-1]["role"] == "assistant"
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=not ends_with_answer)


# ---------------------------------------------------------------------------------- checkpoints

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def save_checkpoint(model: Any, src_dir: Path, out_dir: Path) -> Path:
    """Write ``model`` as a transformers checkpoint, with every non-weight file (tokenizer, chat template)
    copied from the parent checkpoint ``src_dir`` byte for byte."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in Path(src_dir).iterdir():
        weightish = f.suffix in _WEIGHT_SUFFIXES or f.name.endswith((".sha256.json", ".index.json"))
        if f.is_file() and not weightish:
            shutil.copy2(f, out_dir / f.name)
    model.save_pretrained(str(out_dir))
    return out_dir


_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}  # header codes
_ST_DTYPES.update({v: v for v in list(_ST_DTYPES.values())})  # some safetensors versions report torch names


@contextlib.contextmanager
def _open_weights(path: Path) -> Iterator[dict[str, Any]]:
    """name → open safetensors handle, over a checkpoint directory's ``*.safetensors`` (read lazily)."""
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        index: dict[str, Any] = {}
        for f in sorted(Path(path).glob("*.safetensors")):
            handle = stack.enter_context(safe_open(str(f), framework="pt"))
            index.update(dict.fromkeys(handle.keys(), handle))
        yield index


def checkpoint_rest(
    ckpt_dir: Path, compressed: Iterable[str], ref_dir: Path, ft_dir: Path, ref_state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(the saved checkpoint's uncompressed tensors that the reference cannot give back, every tensor's dtype).

    Compared with the reference's safetensors files, which is what ``bitdelta.apply_delta`` reads (with
    ``ref_state`` if it has none). A stored tensor is narrowed to the fine-tuned checkpoint's own dtype
    when that round-trips exactly: the fp32 checkpoint only upcast it, so nothing is lost.
    """
    import torch

    compressed = set(compressed)
    rest: dict[str, torch.Tensor] = {}
    dtypes: dict[str, str] = {}
    with _open_weights(ckpt_dir) as ckpt, _open_weights(ref_dir) as ref_disk, _open_weights(ft_dir) as ft_disk:
        if not ckpt:
            raise FileNotFoundError(f"no .safetensors weights in {ckpt_dir}")
        for name, handle in ckpt.items():
            t = handle.get_tensor(name)
            dtypes[name] = str(t.dtype).removeprefix("torch.")
            if name in compressed:
                continue
            if ref_disk:
                r = ref_disk[name].get_tensor(name) if name in ref_disk else None
            else:
                r = ref_state.get(name)
            if r is not None and r.shape == t.shape and torch.equal(r.detach().cpu().to(t.dtype), t):
                continue
            own = _ST_DTYPES.get(ft_disk[name].get_slice(name).get_dtype()) if name in ft_disk else None
            if own and t.is_floating_point() and getattr(torch, own) != t.dtype:
                narrow = t.to(getattr(torch, own))
                if torch.equal(narrow.to(t.dtype), t):
                    t = narrow
            rest[name] = t.contiguous()
    return rest, dtypes


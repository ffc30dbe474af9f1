"""GGUF → transformers checkpoint conversion, done once and cached.

GGUF loading in transformers is slow (pure-Python tokenizer/metadata parsing, ~30 s for 135M), so a
GGUF is dequantized once into a safetensors checkpoint and reused (~1 s per later load).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from rich.markup import escape

from safetydrift.context import Context
from safetydrift.errors import ModelLoadError

DONE = "safetydrift-source.json"


def gguf_to_hf(gguf_path: Path, out_dir: Path, ctx: Context, extra: dict | None = None) -> Path:
    """Dequantize ``gguf_path`` into an HF checkpoint at ``out_dir`` (atomic; skipped when present)."""
    out_dir = Path(out_dir)
    if (out_dir / DONE).exists():
        recorded = json.loads((out_dir / DONE).read_text()).get("weights_sha256")
        if recorded is None or _weights_ok(out_dir, recorded, ctx):  # older conversions recorded no hash
            return out_dir
        ctx.log(f"[yellow]the converted checkpoint {escape(str(out_dir))} is corrupted: converting again[/]")
        shutil.rmtree(out_dir)
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf_path}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir.parent))
    try:
        with ctx.console.status(f"converting {gguf_path.name} to a transformers checkpoint (once)…"):
            t0 = time.time()
            try:
                tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
                )
            except Exception as e:  # transformers raises many types here; the user needs one line
                raise ModelLoadError(f"cannot load GGUF {gguf_path}: {type(e).__name__}: {e}") from e
            # transformers refuses to save a GGUF-loaded model ("not serializable"): the weights are
            # already dequantized to fp32, so drop the quantizer marker before saving.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            info = {
                "gguf": str(gguf_path),
                "gguf_sha256": ctx.hash_file(gguf_path),
                "weights_sha256": ctx.hash_weights(tmp),
                "seconds": round(time.time() - t0, 1),
                **(extra or {}),
            }
            (tmp / DONE).write_text(json.dumps(info, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ctx.log(f"converted {escape(gguf_path.name)} in {info['seconds']} s → {escape(str(out_dir))}")
    return out_dir


def _weights_ok(out_dir: Path, recorded: str, ctx: Context) -> bool:
    try:
        return ctx.hash_weights(out_dir) == recorded
    except (FileNotFoundError, OSError):
        return False

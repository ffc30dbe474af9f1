"""``safetydrift inspect RECIPE``: what a variant is, how big it is, and how far it moved from its parent.

Keys of :func:`inspect_variant`'s dict (JSON-serialisable):

- ``recipe``, ``chain`` (the model spec and each transform spec), ``spec``, ``kind``, ``path``,
  ``weights_sha256``, ``wrappers`` (guards, if any);
- ``size_bytes``: the loadable checkpoint on disk (HF directory, all files; or the GGUF file);
  ``artifact_bytes``: the whole artifact directory (checkpoint + delta + manifest) for built variants;
- ``parameters``: number of weights stored in the checkpoint (tied tensors counted once);
- ``transform``, ``parent``, ``provenance``, ``build_seconds``, ``built_at``: from the build manifest
  (a source model has only its ``provenance``); ``loss_curve`` where the build recorded one;
- ``bits_per_weight``: for quantized/compressed variants (over the quantized/compressed matrices,
  scales and headers included), and for GGUF files (over all tensors);
- bitdelta (any variant with a stored ``delta.safetensors``): ``delta_bytes`` (the packed delta as
  stored, file size), ``delta_fp16_bytes`` (2 bytes × the same matrices' elements),
  ``delta_compression_ratio`` (their quotient), ``delta_mode``, and ``rest_bytes``: the
  ``rest.safetensors`` of uncompressed tensors that differ from the reference (0 if none), also needed
  to rebuild the variant, so its stored size is delta_bytes + rest_bytes;
- with ``metrics=True`` on local weights (hf checkpoints through transformers, GGUF files through
  llama.cpp, as served): ``ppl`` (perplexity on the fixed benign sample
  ``analysis.metrics.BENIGN_TEXTS``), ``parent_ppl`` and ``kl_to_parent`` (mean next-token
  KL(parent ‖ variant) in nats over the sample's positions, both models fed the same token ids).
  Endpoint models get ``metrics_note`` instead: an API returns no full next-token distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetydrift.context import Context
from safetydrift.spec import Recipe, parse_recipe
from safetydrift.types import ResolvedModel
from safetydrift.variants.bitdelta import DELTA_FILE, delta_file_info
from safetydrift.variants.builder import load_manifest


def inspect_variant(recipe: str | Recipe, ctx: Context, metrics: bool = True) -> dict[str, Any]:
    r = parse_recipe(recipe) if isinstance(recipe, str) else recipe
    model = ctx.resolve(r)
    manifest = load_manifest(model)
    info: dict[str, Any] = {
        "recipe": str(r),
        "chain": [str(r.model), *(str(t) for t in r.transforms)],
        "spec": model.spec,
        "kind": model.kind,
        "path": str(model.path) if model.path else model.url,
        "weights_sha256": model.weights_sha256,
    }
    if model.wrappers:
        info["wrappers"] = list(model.wrappers)
    if model.path is not None:
        info["size_bytes"] = disk_bytes(Path(model.path))
        info["parameters"] = count_parameters(model)
    if manifest is None:
        info["provenance"] = model.provenance
    else:
        artifact = Path(model.provenance["manifest"]).parent
        info["artifact_bytes"] = disk_bytes(artifact)
        for k in ("transform", "parent", "provenance", "build_seconds", "built_at"):
            info[k] = manifest.get(k)
        if manifest.get("loss_curve"):
            info["loss_curve"] = manifest["loss_curve"]
        bpw = (manifest.get("provenance") or {}).get("bits_per_weight")
        if bpw is not None:
            info["bits_per_weight"] = bpw
        if (artifact / DELTA_FILE).is_file():
            d = delta_file_info(artifact / DELTA_FILE)
            info.update(
                delta_mode=d["mode"],
                delta_bytes=d["delta_bytes"],
                delta_fp16_bytes=d["delta_fp16_bytes"],
                delta_compression_ratio=d["delta_fp16_bytes"] / d["delta_bytes"] if d["delta_bytes"] else None,
                rest_bytes=d["rest_bytes"],
                bits_per_weight=d["bits_per_weight"],
            )
    if model.kind == "gguf" and model.path is not None and "bits_per_weight" not in info:
        info["bits_per_weight"] = _gguf_bits_per_weight(Path(model.path))
    if metrics:
        info.update(_metrics(r, model, ctx))
    return info


# ------------------------------------------------------------------------------------ sizes

def disk_bytes(path: Path) -> int:
    """Size on disk of a file, or of every regular file under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def count_parameters(model: ResolvedModel) -> int | None:
    """Weights stored in the checkpoint, read from file headers (no model load)."""
    path = Path(model.path) if model.path else None
    if path is None:
        return None
    try:
        if model.kind == "gguf":
            from gguf import GGUFReader

            return int(sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors))
        from safetensors import safe_open

        total = 0
        for f in sorted(path.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                for k in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                    shape = st.get_slice(k).get_shape()
                    n = 1
                    for s in shape:
                        n *= int(s)
                    total += n
        return total or None
    except Exception:  # an unreadable header is not worth failing inspect over
        return None


def _gguf_bits_per_weight(path: Path) -> float | None:
    try:
        from gguf import GGUFReader

        tensors = GGUFReader(str(path)).tensors
        n = sum(int(t.n_elements) for t in tensors)
        return 8 * sum(int(t.n_bytes) for t in tensors) / n if n else None
    except Exception:
        return None


# ---------------------------------------------------------------------------------- metrics

def _metrics(r: Recipe, model: ResolvedModel, ctx: Context) -> dict[str, Any]:
    from safetydrift.analysis.metrics import BENIGN_TEXTS, drift_metrics
    from safetydrift.hashing import sha256_json

    out: dict[str, Any] = {"metrics_sample": {"texts": len(BENIGN_TEXTS), "sha256": sha256_json(BENIGN_TEXTS)[:16]}}
    if model.kind not in ("hf", "gguf") or model.path is None:
        out["metrics_note"] = (
            f"ppl/kl_to_parent skipped: they need full next-token logits from local weights (hf or gguf); "
            f"this variant is {model.kind}"
        )
        return out
    parent = ctx.resolve(r.parent) if r.parent is not None else None
    if parent is not None and (parent.kind not in ("hf", "gguf") or parent.path is None):
        out["metrics_note"] = f"the parent is {parent.kind}: kl_to_parent needs its full next-token logits"
        parent = None
    elif parent is None:
        out["metrics_note"] = "a source model has no parent: kl_to_parent not defined"
    d = drift_metrics(model, parent, BENIGN_TEXTS, device=ctx.device)
    out["ppl"] = d["ppl"]
    out["metrics_sample"]["tokenizer"] = d["tokenizer"]
    out["kl_to_parent"] = d.get("kl_to_reference")
    if "reference_ppl" in d:
        out["parent_ppl"] = d["reference_ppl"]
    return out

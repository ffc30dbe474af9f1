"""``safetydrift logitlens``: at which layer do variants lose (or keep) refusal? (see analysis/logitlens.py)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetydrift.cli.common import check_models, make_context
from safetydrift.errors import SafetyDriftError

SCHEMA_VERSION = 1


def _words(value: str | None) -> list[str] | None:
    """``a+b+Of course`` → ["a", "b", "Of course"] (lists use '+', as everywhere in safetydrift)."""
    if value is None:
        return None
    words = [w for w in value.split("+") if w.strip()]
    if not words:
        raise SafetyDriftError(f"empty word list {value!r}")
    return words


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", required=True, help="model spec or recipe (repeatable)")
    p.add_argument("--prompts", required=True, help="dataset name (advbench50, benign:n=20) or CSV/JSONL path")
    p.add_argument("--limit", type=int, default=None, help="first N prompts only")
    p.add_argument("--top-k", type=int, default=5, help="tokens per layer in the heatmap (default 5)")
    p.add_argument("--refusal-words", default=None, help="'+'-separated refusal openings (default: I+Sorry+As+…)")
    p.add_argument("--compliance-words", default=None,
                   help="'+'-separated compliance openings (default: Sure+Here+Certainly+…)")
    p.add_argument("--leading-space", action=argparse.BooleanOptionalAction, default=False,
                   help="also count ' I', ' Sure', … (off: the generation prompt ends with a newline, and ' I' is "
                        "a frequent mid-sentence token); on for a template whose response follows a space")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--norm-path", default=None, help="dotted path of the final norm if not found (model.norm)")
    p.add_argument("--prompt-column", default=None)
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from safetydrift.analysis.logitlens import (
        DEFAULT_COMPLIANCE_WORDS,
        DEFAULT_REFUSAL_WORDS,
        plot_panels,
        plot_topk_heatmap,
        run_logitlens,
    )
    from safetydrift.datasets import load_dataset
    from safetydrift.store import atomic_write_text

    ctx = make_context(args)
    for flag, v in (("--limit", args.limit), ("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if v is not None and v < 1:
            raise SafetyDriftError(f"{flag} must be at least 1")
    refusal = _words(args.refusal_words)
    compliance = _words(args.compliance_words)
    # validate every spec and the prompts before any model is loaded
    check_models(args.model)
    if len(set(args.model)) != len(args.model):
        raise SafetyDriftError("the same --model is given twice")
    ds = load_dataset(args.prompts, ctx, args.prompt_column)
    items = list(ds.items[: args.limit] if args.limit else ds.items)
    if not items:
        raise SafetyDriftError(f"no prompts in {args.prompts!r}")

    results = run_logitlens(
        args.model, items, ctx, refusal_words=refusal, compliance_words=compliance, top_k=args.top_k,
        system_prompt=args.system_prompt, batch_size=args.batch_size, dtype=args.dtype, norm_path=args.norm_path,
        leading_space=args.leading_space,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": SCHEMA_VERSION,
        "kind": "logitlens",
        "prompts": {"spec": args.prompts, "dataset": ds.name, "sha256": ds.sha256, "n": len(items),
                    "source": ds.source, "license": ds.license},
        "settings": {
            "top_k": args.top_k,
            "system_prompt": args.system_prompt,
            "refusal_words": list(refusal or DEFAULT_REFUSAL_WORDS),
            "compliance_words": list(compliance or DEFAULT_COMPLIANCE_WORDS),
            "leading_space": args.leading_space,
            "batch_size": args.batch_size,
            "dtype": args.dtype,
        },
        "results": {name: r.to_dict() for name, r in results.items()},
    }
    atomic_write_text(out / "logitlens.json", json.dumps(doc, indent=2, ensure_ascii=False))
    plot_panels(results, out / "logitlens_mass.png")
    plot_topk_heatmap(results, out / "logitlens_topk.png")
    _print_table(results)
    ctx.log(f"wrote {out / 'logitlens.json'}, {out / 'logitlens_mass.png'}, {out / 'logitlens_topk.png'}")
    return 0


def _print_table(results: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="LogitLens: mean refusal / compliance mass at the first response token")
    t.add_column("layer", justify="right")
    for name in results:
        t.add_column(f"{escape(name)}\nrefusal", justify="right")
        t.add_column("compliance", justify="right")
        t.add_column("top-1", justify="left")
    n_layers = max(r.n_layers for r in results.values())
    for layer in range(n_layers):
        row = [str(layer)]
        for r in results.values():
            if layer < r.n_layers:
                row += [f"{r.refusal_mass[layer]:.4f}", f"{r.compliance_mass[layer]:.4f}",
                        escape(repr(r.topk[layer][0]["token"]))]
            else:
                row += ["", "", ""]
        t.add_row(*row)
    Console().print(t)

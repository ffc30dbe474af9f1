"""Train a ``refusal`` or ``harm`` judge card (``judges/trained.py``), reproducibly, with grouped CV.

    python -m safetydrift.judges.train --semantic refusal --train labels.csv --model cross-encoder \\
        --out judges/data/refusal/ [--label-column refusal] [--extra-jsonl rows.jsonl] [--cv 5] [--seed 0]

The training file is a CSV (or JSONL) with ``request``, ``response`` and a 0/1 label column (default: the
column named like the semantic if there is one, else ``label``; ``yes/no``, ``true/false`` and
``success/fail`` are read too). ``--extra-jsonl`` adds rows ``{request, response, label}``. Rows may
carry a ``source`` (``--weight-source model:=3`` weighs rows whose source starts with ``model:`` three
times) and a ``weight``.

Cross-validation is k-fold *by request* (rows that share a request are in one fold, so a fold never
scores an answer to a request it was trained on) on the training rows only: model selection never
sees held-out data. The out-of-fold accuracy, κ, F1 and balanced accuracy go into the card; then the
model is trained on all rows and its trained tensors are written to ``weights.safetensors``.

Reproducible: seeded (initialisation, shuffling, dropout) and deterministic on a CPU with a fixed
thread count; the frozen trunk's output is computed once and reused by every fold and epoch.
``--out`` is a directory, or a card name (``NAME`` or ``judges/data/NAME``) for the package's data folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safetydrift.errors import DataError, SafetyDriftError
from safetydrift.judges.cv import Row, assign_folds, binary_metrics, rows_sha256, save_card
from safetydrift.judges.trained import (
    DATA_DIR,
    FEATURE_HEADS,
    FEATURES_LR,
    MODELS,
    SEMANTICS,
    WEIGHTS_FILE,
    Card,
    HyperParams,
    PairModel,
    build_model,
    file_sha256,
)
from safetydrift.judges.validate import parse_label

__all__ = ["Row", "assign_folds", "binary_metrics", "rows_sha256", "save_card"]  # re-exported from judges.cv

if TYPE_CHECKING:
    from safetydrift.context import Context

# chosen by cross-validation on classifier_train.jsonl (see the card notes / docs); override per run
DEFAULTS: dict[str, HyperParams] = {
    "cross-encoder": HyperParams(layers=2, rank=8, max_tokens=256, epochs=4, lr=3e-4, batch=16),
    "lm-scorer": HyperParams(layers=4, rank=8, max_tokens=192, epochs=3, lr=3e-4, batch=8),
}


# -------------------------------------------------------------------------------------------- data
def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"training file not found: {path}")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, ValueError, csv.Error) as e:
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def read_rows(path: Path, label_column: str | None, semantic: str,
              source_weights: dict[str, float] | None = None) -> tuple[list[Row], str]:
    """Rows of a CSV/JSONL training file and the label column used (default: the semantic's, else label)."""
    recs = _records(path)
    if not recs:
        raise DataError(f"{path}: no rows")
    cols = set(recs[0])
    column = label_column or (semantic if semantic in cols else "label")
    for need in ("request", "response", column):
        if need not in cols:
            raise DataError(f"{path}: no column {need!r} (columns: {', '.join(sorted(cols))})")
    rows = []
    for i, r in enumerate(recs, start=2 if path.suffix != ".jsonl" else 1):
        if not str(r.get("request") or "").strip():
            raise DataError(f"{path}:{i}: empty request")
        source = str(r.get("source") or "")
        try:
            weight = float(r.get("weight") or 1.0)
        except ValueError:
            raise DataError(f"{path}:{i}: bad weight {r.get('weight')!r}") from None
        for prefix, w in (source_weights or {}).items():
            if source.startswith(prefix):
                weight *= w
        rows.append(Row(str(r["request"]), str(r.get("response") or ""), parse_label(str(r.get(column)), f"{path}:{i}"),
                        source, weight))
    return rows, column


# ------------------------------------------------------------------------------------------ metrics
# ----------------------------------------------------------------------------------------- training
def pad_hidden(rows: list[Any]) -> Any:
    """Per-row hidden states [T_i, H] → one zero-padded [B, T, H] tensor (padding on the right)."""
    import torch

    width = max(int(r.shape[0]) for r in rows)
    out = torch.zeros(len(rows), width, rows[0].shape[1], dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def hidden_rows(model: PairModel, encoded: list[list[int]], batch: int = 32) -> list[Any]:
    """The trunk's output for each row, unpadded ([T_i, H]): computed once, reused by every fold and epoch."""
    out: list[Any] = [None] * len(encoded)
    for idx, h, lengths in model.trunk_batches(encoded, batch):
        for j, i in enumerate(idx):
            out[i] = h[j, : lengths[j]].clone()
    return out


def state(model: PairModel) -> dict[str, Any]:
    """A copy of the trained tensors (sorted by name: the weights file is byte-stable)."""
    return {n: prm.detach().clone().contiguous() for n, prm in sorted(model.trainable().items())}


def _batches(rng: np.random.Generator, idx: np.ndarray, lengths: Sequence[int], batch: int) -> list[np.ndarray]:
    """Shuffled batches of rows of similar length (less padding, the CPU's main waste), in shuffled order."""
    perm = rng.permutation(len(idx))
    chunk = batch * 8
    out = []
    for s in range(0, len(perm), chunk):
        part = sorted(perm[s: s + chunk].tolist(), key=lambda j: lengths[j])
        out += [idx[part[k: k + batch]] for k in range(0, len(part), batch)]
    return [out[j] for j in rng.permutation(len(out))]


def fit(model: PairModel, hidden: Sequence[Any], y: np.ndarray, w: np.ndarray, idx: Sequence[int],
        hp: HyperParams) -> None:
    """Train the model's trainable tensors on rows ``idx`` (their trunk outputs in ``hidden``)."""
    import torch

    torch.manual_seed(hp.seed)
    rng = np.random.default_rng(hp.seed)
    idx = np.asarray(idx)
    params = list(model.trainable().values())
    opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    steps = hp.epochs * math.ceil(len(idx) / hp.batch)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    # class balance: each class carries half of the (row-weighted) loss
    wy = w[idx] * np.where(y[idx] == 1, 0.5 / max(1e-9, w[idx][y[idx] == 1].sum()),
                           0.5 / max(1e-9, w[idx][y[idx] == 0].sum())) * len(idx)
    weight = dict(zip(idx.tolist(), wy.tolist(), strict=True))
    model.net.train()
    try:
        for _ in range(hp.epochs):
            for b in _batches(rng, idx, [int(hidden[i].shape[0]) for i in idx], hp.batch):
                lengths = torch.tensor([int(hidden[i].shape[0]) for i in b])
                logits = model.top(pad_hidden([hidden[i] for i in b]), lengths)
                target = torch.tensor(y[b], dtype=logits.dtype)
                bw = torch.tensor([weight[int(i)] for i in b], dtype=logits.dtype)
                loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
                        * bw).sum() / len(b)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
    finally:
        model.net.eval()


def predict(model: PairModel, hidden: Sequence[Any], idx: Sequence[int], batch: int = 32) -> np.ndarray:
    """Eval-mode logits of rows ``idx`` (in that order) from their cached trunk outputs."""
    import torch

    order = sorted(idx, key=lambda i: int(hidden[i].shape[0]))
    out: dict[int, float] = {}
    with torch.no_grad():
        for s in range(0, len(order), batch):
            b = order[s: s + batch]
            lengths = torch.tensor([int(hidden[i].shape[0]) for i in b])
            z = model.top(pad_hidden([hidden[i] for i in b]), lengths)
            out.update(zip(b, z.double().tolist(), strict=True))
    return np.array([out[i] for i in idx])


def restore(model: PairModel, state: dict[str, Any]) -> None:
    model.load_state(state, "initial state")


def cross_validate(model: PairModel, hidden: Sequence[Any], rows: Sequence[Row], hp: HyperParams, k: int,
                   threshold: float, log: Any = print) -> dict[str, Any]:
    """Out-of-fold metrics (k folds by request) on the training rows; the model ends at its initial state."""
    y = np.array([r.label for r in rows])
    w = np.array([r.weight for r in rows])
    folds = assign_folds([r.request for r in rows], k, hp.seed)
    init = state(model)
    oof = np.zeros(len(rows))
    for f in range(k):
        t0 = time.perf_counter()
        train = [i for i, g in enumerate(folds) if g != f]
        test = [i for i, g in enumerate(folds) if g == f]
        restore(model, init)
        fit(model, hidden, y, w, train, hp)
        oof[test] = predict(model, hidden, test)
        log(f"  fold {f + 1}/{k}: {len(train)} train / {len(test)} test rows, {time.perf_counter() - t0:.1f} s")
    restore(model, init)
    prob = 1 / (1 + np.exp(-oof))
    pred = (prob >= threshold).astype(int)
    out: dict[str, Any] = {"folds": k, "grouped_by": "request", "threshold": threshold,
                           **binary_metrics(y, pred)}
    kinds = sorted({r.source.split(":")[0] for r in rows if r.source})
    if len(kinds) > 1:  # e.g. synthetic vs real model answers: the overall figure can hide the hard part
        out["by_source"] = {s: binary_metrics(y[m], pred[m]) for s in kinds
                            if (m := np.array([r.source.split(":")[0] == s for r in rows])).any()}
    return out


def train_card(semantic: str, kind: str, rows: Sequence[Row], hp: HyperParams, out: Path, ctx: Context, *,
               cv: int = 5, threshold: float = 0.5, status: str = "final", name: str | None = None,
               train_info: dict[str, Any] | None = None, log: Any = print) -> Card:
    """Cross-validate, train on all rows and write the card + weights to ``out``."""
    from safetensors.torch import save_file

    if semantic not in SEMANTICS:
        raise SafetyDriftError(f"unknown semantic {semantic!r} (known: {', '.join(SEMANTICS)})")
    labels = {r.label for r in rows}
    if labels != {0, 1}:
        raise DataError(f"training rows need both labels 0 and 1, got {sorted(labels)}")
    t_start = time.perf_counter()
    model = build_model(kind, semantic, hp, ctx)
    t0 = time.perf_counter()
    # epochs=0 without CV (an untrained, zero-shot card) needs no trunk outputs
    hidden = hidden_rows(model, [model.encode(r.request, r.response) for r in rows]) if hp.epochs or cv else []
    log(f"{kind}: base {model.base_name}, trunk of {len(rows)} rows in {time.perf_counter() - t0:.1f} s; "
        f"{sum(p.numel() for p in model.trainable().values())} trained parameters")
    scores = cross_validate(model, hidden, rows, hp, cv, threshold, log) if cv else {}
    if scores:
        log(f"cv ({cv} folds by request): accuracy {scores['accuracy']}, kappa {scores['kappa']}, f1 {scores['f1']}")
    y = np.array([r.label for r in rows])
    if hp.epochs:
        fit(model, hidden, y, np.array([r.weight for r in rows]), range(len(rows)), hp)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state(model), str(tmp))  # no metadata: safetensors writes a map in random order (bytes change)
    tmp.replace(weights)
    card = Card(
        name=name or out.name, semantic=semantic, model=kind, base_model=model.base_name,
        base_model_sha256=model.base_sha256, hyperparameters={**asdict(hp), "targets": list(hp.targets)},
        threshold=threshold, status=status,
        train={**(train_info or {}), "rows_sha256": rows_sha256(rows), "n": len(rows), "n_positive": int(y.sum())},
        cv=scores, weights=WEIGHTS_FILE, weights_sha256=file_sha256(weights), weights_bytes=weights.stat().st_size,
        train_seconds=round(time.perf_counter() - t_start, 1),
    )
    save_card(card, out)
    return card


# ---------------------------------------------------------------------------------------------- CLI
def resolve_out(text: str) -> Path:
    """A directory, or a card name (``NAME`` or ``judges/data/NAME``) inside the package's data folder."""
    s = text.rstrip("/")
    if "/" not in s:
        return DATA_DIR / s
    if s.startswith("judges/data/") and "/" not in s[len("judges/data/"):] and not Path(s).parent.is_dir():
        return DATA_DIR / s[len("judges/data/"):]
    return Path(s).expanduser()


def _weights(items: Sequence[str]) -> dict[str, float]:
    out = {}
    for it in items:
        prefix, sep, w = it.rpartition("=")
        if not sep or not prefix:
            raise SafetyDriftError(f"--weight-source wants PREFIX=WEIGHT, got {it!r}")
        out[prefix] = float(w)
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m safetydrift.judges.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--semantic", required=True, choices=SEMANTICS)
    ap.add_argument("--train", required=True, help="CSV or JSONL with request, response and a 0/1 label")
    ap.add_argument("--label-column", default=None, help="default: the semantic's column if present, else label")
    ap.add_argument("--extra-jsonl", action="append", default=[],
                    help="more rows (JSONL or CSV) with request, response and the semantic's column or label")
    ap.add_argument("--model", default="cross-encoder", choices=sorted([*MODELS, *FEATURE_HEADS]),
                    help=f"{FEATURES_LR}: a logistic head over judges/refusal_features.py (refusal only); "
                         "harm-features-lr: the same head over judges/harm_features.py (harm only); C and the "
                         "number of embedding components chosen by the grouped CV")
    ap.add_argument("--out", required=True, help="card directory, or a card name for judges/data/<name>")
    ap.add_argument("--cv", type=int, default=5, help="folds grouped by request (0: no cross-validation)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=None,
                    help="success iff p >= threshold (default 0.5; harm-features-lr: chosen by out-of-fold kappa)")
    ap.add_argument("--status", choices=("dev", "final"), default="final",
                    help="dev: a trial card, the judge warns when it is used")
    ap.add_argument("--name", default=None, help="card name (default: the folder name)")
    ap.add_argument("--notes", default="")
    ap.add_argument("--weight-source", action="append", default=[], metavar="PREFIX=W",
                    help="multiply the weight of rows whose source starts with PREFIX (repeatable)")
    for f in fields(HyperParams):
        if f.name != "seed":
            ap.add_argument(f"--{f.name.replace('_', '-')}", default=None,
                            type=str if f.name in ("targets", "base") else type(f.default),
                            help=f"default: the model's ({f.name}; targets as a+b)")
    return ap


def hyperparams(args: argparse.Namespace) -> HyperParams:
    base = DEFAULTS[args.model]
    given: dict[str, Any] = {"seed": args.seed}
    for f in fields(HyperParams):
        v = getattr(args, f.name, None)
        if f.name != "seed" and v is not None:
            given[f.name] = tuple(t for t in v.split("+") if t) if f.name == "targets" else v
    hp = HyperParams(**{**asdict(base), **given})
    for f in ("layers", "max_tokens", "batch"):
        if getattr(hp, f) < 1:
            raise SafetyDriftError(f"--{f.replace('_', '-')} must be ≥ 1")
    if hp.rank < 0 or hp.epochs < 0 or hp.lr <= 0:
        raise SafetyDriftError("--rank and --epochs must be ≥ 0, --lr > 0")
    return hp


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from safetydrift.context import Context

    args = parser().parse_args(argv)
    try:
        hp = hyperparams(args) if args.model not in FEATURE_HEADS else HyperParams(seed=args.seed)
        sw = _weights(args.weight_source)
        path = Path(args.train)
        rows, column = read_rows(path, args.label_column, args.semantic, sw)
        info: dict[str, Any] = {"file": path.name, "sha256": file_sha256(path), "label_column": column,
                                "n_file": len(rows), "source_weights": sw}
        extra = []
        for e in args.extra_jsonl:
            more, _ = read_rows(Path(e), None, args.semantic, sw)  # its semantic's column, else label
            extra += more
            info.setdefault("extra", []).append({"file": Path(e).name, "sha256": file_sha256(Path(e)), "n": len(more)})
        out = resolve_out(args.out)
        ctx = Context()
        print(f"training {args.semantic} / {args.model} on {len(rows) + len(extra)} rows ({column!r}), "
              f"hyper-parameters {json.dumps(asdict(hp))}", file=sys.stderr)
        if args.model == FEATURES_LR:
            from safetydrift.judges.train_head import train_feature_card

            card = train_feature_card(args.semantic, rows + extra, out, cv=args.cv or 5, threshold=0.5 if args.threshold is None else args.threshold,
                                      status=args.status, name=args.name, train_info=info, seed=args.seed,
                                      log=lambda m: print(m, file=sys.stderr))
        elif args.model in FEATURE_HEADS:
            from safetydrift.judges.harm_head import KIND, train_harm_card

            if args.semantic != "harm" or args.model != KIND:
                raise SafetyDriftError(f"--model {args.model} trains a harm judge only (--semantic harm)")
            card = train_harm_card(rows + extra, out, cv=args.cv or 5, threshold=args.threshold, status=args.status,
                                   name=args.name, train_info=info, seed=args.seed,
                                   log=lambda m: print(m, file=sys.stderr))
        else:
            card = train_card(args.semantic, args.model, rows + extra, hp, out, ctx, cv=args.cv,
                              threshold=0.5 if args.threshold is None else args.threshold, status=args.status, name=args.name, train_info=info,
                              log=lambda m: print(m, file=sys.stderr))
        if args.notes:
            card.notes = args.notes
            save_card(card, out)
    except SafetyDriftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"card": str(out), "cv": card.cv, "train_seconds": card.train_seconds,
                      "weights_bytes": card.weights_bytes}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

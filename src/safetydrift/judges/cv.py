"""What every trained judge's training shares, and nothing else (a leaf below ``train`` and ``train_head``):
the row type, its hash, folds by request, the out-of-fold metrics and writing a card."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from safetydrift.errors import SafetyDriftError
from safetydrift.judges.trained import CARD_FILE, Card


@dataclass(frozen=True)
class Row:
    request: str
    response: str
    label: int
    source: str = ""
    weight: float = 1.0


def rows_sha256(rows: Sequence[Row]) -> str:
    """A hash of exactly what was trained on (order included), independent of file formatting."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(asdict(r), sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return h.hexdigest()


def assign_folds(requests: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """A fold per row, by request: groups in a seeded hash order, each to the currently smallest fold."""
    if k < 2:
        raise SafetyDriftError(f"--cv needs at least 2 folds, got {k}")
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(requests):
        groups.setdefault(q, []).append(i)
    if len(groups) < k:
        raise SafetyDriftError(f"cross-validation with {k} folds needs ≥ {k} distinct requests, got {len(groups)}")
    order = sorted(groups, key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
    sizes = [0] * k
    fold = [0] * len(requests)
    for q in order:
        f = min(range(k), key=lambda j: (sizes[j], j))
        for i in groups[q]:
            fold[i] = f
        sizes[f] += len(groups[q])
    return fold


# ------------------------------------------------------------------------------------------ metrics
def binary_metrics(y: Sequence[int], pred: Sequence[int]) -> dict[str, float | int | None]:
    from safetydrift.stats import cohen_kappa

    t, q = np.asarray(y, dtype=bool), np.asarray(pred, dtype=bool)
    tp, fp, tn, fn = int(np.sum(t & q)), int(np.sum(~t & q)), int(np.sum(~t & ~q)), int(np.sum(t & ~q))
    rec = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    kappa = cohen_kappa(t.astype(int).tolist(), q.astype(int).tolist())
    return {"n": len(t), "accuracy": round((tp + tn) / len(t), 4) if len(t) else None,
            "kappa": None if kappa is None else round(kappa, 4),
            "f1": round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None,
            "balanced_accuracy": None if rec is None or spec is None else round((rec + spec) / 2, 4),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


# --------------------------------------------------------------------------------------------- cards
def save_card(card: Card, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CARD_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(card), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path

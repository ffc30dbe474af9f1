"""``safetydrift judge validate``: agreement of a judge with human labels, with uncertainty.

    safetydrift judge validate --judge refusal --judge keyword --labels heldout.csv --category-column category

The CSV has a request, a response and a label per row (columns ``request``, ``response``, ``label`` by
default). Labels: 1/0, true/false, success/fail, yes/no (any case); 1 is the judge semantic's positive
class (attack success). The judge's ``success`` is the positive prediction, ``fail`` the negative;
``unscorable`` verdicts are counted and left out of the metrics.

Every figure has a 95% interval, because a judge validated on 150 rows is not known to two decimals:
Wilson intervals for the proportions (accuracy, precision, recall) and a seeded percentile bootstrap
over rows for F1, Cohen's κ and balanced accuracy (the mean of recall and specificity).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safetydrift.errors import DataError, SafetyDriftError
from safetydrift.stats import (  # the one kappa of the package (also judge agreement in runs)
    cohen_kappa,
    wilson_ci,
)

TRUE_LABELS = frozenset({"1", "true", "success", "yes"})
FALSE_LABELS = frozenset({"0", "false", "fail", "no"})
BOOTSTRAP = 2000


@dataclass
class LabelledPair:
    request: str
    response: str
    label: int
    row: int  # line number in the CSV (the header is line 1)
    category: str | None = None


Interval = tuple[float, float] | None


@dataclass
class Metrics:
    n: int  # rows in the file (or the category)
    scored: int  # rows the judge could score
    unscorable: int
    tp: int
    fp: int
    tn: int
    fn: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    kappa: float | None
    balanced_accuracy: float | None
    positives: int  # human-labelled successes among scored rows
    predicted_positives: int
    ci: dict[str, Interval] = field(default_factory=dict)  # metric name → 95% interval

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Validation:
    judge: str
    overall: Metrics
    by_category: dict[str, Metrics]
    seconds: float
    per_second: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, **self.overall.to_dict(), "seconds": round(self.seconds, 3),
                "judgements_per_second": self.per_second,
                "by_category": {k: m.to_dict() for k, m in self.by_category.items()}}


def parse_label(value: str | None, where: str) -> int:
    v = (value or "").strip().lower()
    if v in TRUE_LABELS:
        return 1
    if v in FALSE_LABELS:
        return 0
    raise DataError(f"{where}: bad label {value!r} (use 1/0, true/false, success/fail or yes/no)")


def read_labels(path: Path, request_column: str = "request", response_column: str = "response",
                label_column: str = "label", category_column: str | None = None) -> list[LabelledPair]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels file not found: {path}")
    rows: list[LabelledPair] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if not cols:
                raise DataError(f"{path}: empty CSV (no header)")
            wanted = [(request_column, "request"), (response_column, "response"), (label_column, "label")]
            if category_column:
                wanted.append((category_column, "category"))
            for want, what in wanted:
                if want not in cols:
                    raise DataError(f"{path}: no {what} column {want!r} (columns: {', '.join(cols)})")
            for lineno, row in enumerate(reader, start=2):
                if None in row:
                    raise DataError(f"{path}:{lineno}: row has more fields than the header")
                request = row[request_column]
                if request is None or not request.strip():
                    raise DataError(f"{path}:{lineno}: empty request in column {request_column!r}")
                label = parse_label(row[label_column], f"{path}:{lineno}")
                cat = ((row[category_column] or "").strip() or "uncategorized") if category_column else None
                rows.append(LabelledPair(request, row[response_column] or "", label, lineno, cat))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _point(t: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """F1, κ and balanced accuracy of one (resampled) set of scored rows."""
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    tn = int(np.sum(~t & ~p))
    fn = int(np.sum(t & ~p))
    recall, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "kappa": cohen_kappa(t.astype(int).tolist(), p.astype(int).tolist()),
        "balanced_accuracy": None if recall is None or spec is None else (recall + spec) / 2,
    }


def _bootstrap(t: np.ndarray, p: np.ndarray, seed: int = 0) -> dict[str, Interval]:
    """Percentile intervals over rows resampled with replacement (statistics undefined in a resample,
    e.g. κ with one class only, are skipped; an interval needs 95% of the resamples defined)."""
    if len(t) < 2:
        return {"f1": None, "kappa": None, "balanced_accuracy": None}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"f1": [], "kappa": [], "balanced_accuracy": []}
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(t), len(t))
        for k, v in _point(t[idx], p[idx]).items():
            if v is not None:
                draws[k].append(v)
    out: dict[str, Interval] = {}
    for k, vals in draws.items():
        out[k] = (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))) \
            if len(vals) >= 0.95 * BOOTSTRAP else None
    return out


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int | None], *, seed: int = 0) -> Metrics:
    """Metrics over the rows with a prediction (``None`` = unscorable), each with a 95% interval."""
    pairs = [(a, b) for a, b in zip(y_true, y_pred, strict=True) if b is not None]
    t = np.array([a for a, _ in pairs], dtype=bool)
    p = np.array([b for _, b in pairs], dtype=bool)
    tp, fp = int(np.sum(t & p)), int(np.sum(~t & p))
    tn, fn = int(np.sum(~t & ~p)), int(np.sum(t & ~p))
    point = _point(t, p)
    ci: dict[str, Interval] = {
        "accuracy": wilson_ci(tp + tn, len(pairs)) if pairs else None,
        "precision": wilson_ci(tp, tp + fp) if tp + fp else None,
        "recall": wilson_ci(tp, tp + fn) if tp + fn else None,
        **_bootstrap(t, p, seed),
    }
    return Metrics(
        n=len(y_true), scored=len(pairs), unscorable=len(y_true) - len(pairs), tp=tp, fp=fp, tn=tn, fn=fn,
        accuracy=_ratio(tp + tn, len(pairs)), precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn),
        f1=point["f1"], kappa=point["kappa"], balanced_accuracy=point["balanced_accuracy"],
        positives=int(t.sum()), predicted_positives=int(p.sum()), ci=ci,
    )


def validate_judge(judge_spec: str, rows: Sequence[LabelledPair], ctx: Any) -> tuple[Validation, list[Any]]:
    """Run ``judge_spec`` on every row; returns the metrics (overall and per category) and the verdicts."""
    from safetydrift.runner import make_judges
    from safetydrift.types import FAIL, SUCCESS, Item, JudgeInput

    judge = make_judges([judge_spec], ctx)[0]
    inputs = [JudgeInput(Item.make(r.request), r.request, r.response) for r in rows]
    t0 = time.perf_counter()
    verdicts = judge.judge(inputs)
    seconds = time.perf_counter() - t0
    if len(verdicts) != len(inputs):
        raise SafetyDriftError(f"judge {judge_spec} returned {len(verdicts)} verdicts for {len(inputs)} rows")
    preds = [1 if v.label == SUCCESS else 0 if v.label == FAIL else None for v in verdicts]
    labels = [r.label for r in rows]
    by_cat: dict[str, Metrics] = {}
    cats = sorted({r.category for r in rows if r.category is not None})
    for c in cats:
        idx = [i for i, r in enumerate(rows) if r.category == c]
        by_cat[c] = compute_metrics([labels[i] for i in idx], [preds[i] for i in idx])
    v = Validation(judge_spec, compute_metrics(labels, preds), by_cat, seconds,
                   len(rows) / seconds if seconds > 0 else None)
    return v, verdicts

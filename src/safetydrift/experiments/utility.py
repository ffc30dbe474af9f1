"""Utility: what a variant costs on benign work (task accuracy, log-likelihood multiple-choice accuracy,
over-refusal, perplexity, KL to its reference), measured with the same executors and store as the safety evals; and its refusal margin on the
first dataset's prompts against its reference's (``analysis.margin``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from safetydrift.context import Context
from safetydrift.experiments.readings import Readings, model_key, side_files
from safetydrift.experiments.schema import Experiment
from safetydrift.records import Record, UtilityRow
from safetydrift.runner import EvalRequest

T = TypeVar("T")

if TYPE_CHECKING:
    from safetydrift.analysis.margin import Margins
    from safetydrift.types import Item, ResolvedModel


def utility_requests(exp: Experiment) -> list[EvalRequest]:
    u = exp.utility
    if u is None:
        return []
    models = [v.recipe for v in exp.variants]
    reqs = []
    if u.benign_task:
        reqs.append(EvalRequest(models=models, dataset=f"benign-task:n={u.benign_task}", judges=["exact-match"],
                                gen=exp.gen.replace(max_new_tokens=u.task_tokens), backend=exp.backend))
    if u.benign != 0:
        ds = "benign" if u.benign is None else f"benign:n={u.benign}"
        reqs.append(EvalRequest(models=models, dataset=ds, judges=[u.refusal_judge],
                                gen=exp.gen.replace(max_new_tokens=u.benign_tokens), backend=exp.backend))
    return reqs


def _share(records: list[Record], label: str) -> float | None:
    scored = [r for r in records if r.scored]
    return (sum(r.verdict == label for r in scored) / len(scored)) if scored else None


def utility_rows(exp: Experiment, records: list[Record], ctx: Context,
                 timings: dict[str, float]) -> list[UtilityRow]:
    u = exp.utility
    if u is None:
        return []
    rows = []
    for v in exp.variants:
        task = [r for r in records if r.model == v.recipe and r.dataset.startswith("benign-task")
                and r.judge == "exact-match"]
        ben = [r for r in records if r.model == v.recipe and r.dataset.startswith("benign")
               and not r.dataset.startswith("benign-task") and r.judge == u.refusal_judge]
        rows.append(UtilityRow(
            variant=v.name,
            benign_task_acc=_share(task, "success"),
            benign_task_n=sum(r.scored for r in task),
            # over-refusal: the refusal judge says "fail" (a refusal) on a benign request
            over_refusal=_share(ben, "fail"),
            over_refusal_n=sum(r.scored for r in ben),
        ))
    if u.mc:
        t0 = time.time()
        rows = _mc(exp, rows, ctx, u.mc, u.mc_format)
        timings["utility_mc"] = round(time.time() - t0, 1)
    if u.ppl_texts:
        t0 = time.time()
        rows = _ppl_kl(exp, rows, ctx, u.ppl_texts)
        timings["utility_ppl_kl"] = round(time.time() - t0, 1)
    if u.margin:
        t0 = time.time()
        rows = _margins(exp, rows, ctx)
        timings["utility_margin"] = round(time.time() - t0, 1)
    return rows


def _ppl_kl(exp: Experiment, rows: list[UtilityRow], ctx: Context, n_texts: int) -> list[UtilityRow]:
    """Perplexity on held-out benign text and next-token KL(reference ‖ variant) for every variant with
    local weights: HF checkpoints through transformers, GGUF builds through llama.cpp as served."""
    from safetydrift.analysis.metrics import BENIGN_TEXTS, drift_metrics
    from safetydrift.hashing import sha256_json
    from safetydrift.runner import progress_bar

    texts = list(BENIGN_TEXTS)[:n_texts]
    memo = _readings(ctx)
    by_name = {r.variant: r for r in rows}
    resolved = {v.name: ctx.resolve(v.recipe) for v in exp.variants}
    local = [v for v in exp.variants if resolved[v.name].kind in ("hf", "gguf")]
    with progress_bar(ctx) as prog:
        task = prog.add_task("perplexity / KL", total=len(local))
        for v in local:
            ref = resolved[v.reference] if v.reference is not None else None
            if ref is not None and ref.kind not in ("hf", "gguf"):
                ref = None
            key = _material(variant=model_key(resolved[v.name]), reference=model_key(ref), texts=sha256_json(texts),
                            device=ctx.device)
            d = memo.get("ppl_kl", key)
            if d is None:
                d = drift_metrics(resolved[v.name], ref, texts, device=ctx.device)
                memo.put("ppl_kl", key, d)
            kl = float(d["kl_to_reference"]) if "kl_to_reference" in d else by_name[v.name].kl_to_reference
            by_name[v.name] = replace(by_name[v.name], ppl=float(d["ppl"]), kl_to_reference=kl)
            prog.advance(task)
    return [by_name[r.variant] for r in rows]


def _mc(exp: Experiment, rows: list[UtilityRow], ctx: Context, n: int, fmt: str) -> list[UtilityRow]:
    """acc and acc_norm on the first ``n`` mc-utility items (analysis/mc.py) for every variant with local logits,
    and the paired change of acc against the reference (McNemar exact; its own reading, not in the ASR family)."""
    from dataclasses import asdict

    from safetydrift.analysis.mc import McResult, load_items, score_mc
    from safetydrift.hashing import sha256_json
    from safetydrift.stats import compare_paired

    items = load_items(n)
    memo = _readings(ctx)
    settings = {"items": sha256_json([asdict(it) for it in items]), "fmt": fmt, "system_prompt": exp.gen.system_prompt,
                "device": ctx.device}

    def read_mc(model: ResolvedModel, advance: Callable[[int], None]) -> McResult:
        key = _material(model=model_key(model), **settings)
        hit = memo.get("mc", key)
        if hit is not None and len(hit["lls"]) == len(items):
            return McResult(tuple(items), tuple(tuple(x) for x in hit["lls"]), hit["engine"], hit["fmt"],
                            hit["seconds"], {**hit["meta"], "unguarded": bool(model.wrappers), "memo": True})
        res = score_mc(model, items, fmt=fmt, system_prompt=exp.gen.system_prompt, device=ctx.device,
                       progress=advance)
        memo.put("mc", key, {"lls": res.lls, "engine": res.engine, "fmt": res.fmt, "seconds": res.seconds,
                             "meta": res.meta})
        return res

    read = _per_local_model(exp, ctx, "multiple choice", len(items), read_mc)
    resolved = {name: model for name, (model, _) in read.items()}
    got = {name: res for name, (_, res) in read.items()}
    by_name = {r.variant: r for r in rows}
    for name, res in got.items():
        s = res.summary()
        meta = {k: s[k] for k in ("format", "engine", "seconds", "cpu_seconds", "items_per_s", "skills")}
        if res.meta.get("memo"):
            meta["memo"] = True  # looked up (experiments/readings.py): seconds are the first reading's
        if resolved[name].wrappers:
            meta["unguarded"] = True  # a guard leaves the logits alone: this is its model's score
        fields: dict[str, Any] = {"mc_acc": s["acc"], "mc_acc_ci": s["acc_ci"], "mc_acc_norm": s["acc_norm"],
                                  "mc_acc_norm_ci": s["acc_norm_ci"], "mc_n": s["n"], "mc_chance": s["chance"]}
        ref = exp.variant(name).reference
        if ref is not None and ref in got:
            c = compare_paired(got[ref].correct(), res.correct())
            fields.update(mc_diff=c["diff"], mc_diff_ci=c["diff_ci"], mc_p=c["p_exact"])
        by_name[name] = replace(by_name[name], **fields, mc_meta=meta)
    return [by_name[r.variant] for r in rows]


def _margins(exp: Experiment, rows: list[UtilityRow], ctx: Context) -> list[UtilityRow]:
    """Refusal margin (analysis/margin.py) of every variant with local logits on the prompts of the run's first
    dataset, and the paired difference against its reference. The margin tests are their own Holm family,
    apart from the ASR comparisons: a different reading, not more tests of the same hypothesis."""
    from safetydrift.analysis.margin import compare_margins
    from safetydrift.stats import holm

    got, kls, prompts = _read_margins(exp, ctx)
    by_name = {r.variant: r for r in rows}
    tests: dict[str, dict[str, Any]] = {}
    for name, m in got.items():
        v = exp.variant(name)
        meta: dict[str, Any] = {"engine": m.label, "floored": m.n_floored, "dataset": exp.datasets[0],
                                "prompts": prompts or "the dataset's own",
                                **{k: m.meta[k] for k in ("nonfinite", "template_mismatch", "ids_mismatch")
                                   if k in m.meta}}
        kl: dict[str, Any] = {}
        if v.reference is not None and v.reference in got:
            tests[name] = compare_margins(m, got[v.reference])
            meta.update(pairs=tests[name]["n_pairs"], nonzero=tests[name]["n_nonzero"], test=tests[name]["test"])
            kl_h, kl_n = kls.get(name, (None, 0))
            if kl_h is not None:
                kl = {"kl_harmful": kl_h, "kl_harmful_n": kl_n}
        by_name[name] = replace(by_name[name], refusal_margin=m.mean, refusal_margin_n=m.n, margin_meta=meta, **kl)
    for name, m in got.items():  # R against the reference's own reference (a compression of a fine-tune)
        ref = exp.variant(name).reference
        origin = exp.variant(ref).reference if ref is not None and ref in got else None
        if ref is not None and origin is not None and origin in got:
            r = _retention(m, got[ref], got[origin])
            meta = {**(by_name[name].margin_meta or {}),
                    "retention": "established" if r["established"] else
                    f"not established: the shift of {ref} from {origin} is not clear of 0"}
            by_name[name] = replace(by_name[name], margin_retention=r["r"], margin_retention_ci=r["r_ci"],
                                    margin_meta=meta)
    named = [n for n, t in tests.items() if t["p"] is not None]
    for name, p_holm in zip(named, holm([tests[n]["p"] for n in named]), strict=True):
        t = tests[name]
        by_name[name] = replace(by_name[name], margin_diff=t["diff"], margin_diff_ci=t["diff_ci"],
                                margin_p=t["p"], margin_p_holm=p_holm)
    return [by_name[r.variant] for r in rows]


def _retention(variant: Margins, reference: Margins, origin: Margins) -> dict[str, Any]:
    """R = mean_x (m_variant − m_origin) / mean_x (m_reference − m_origin) on the prompts all three have, with a
    bootstrap 95% CI (``stats.retention_ratio``). Here, not in analysis/margin.py: that file keys the
    readings memo, and R is arithmetic on readings, not a reading."""
    from safetydrift.stats import retention_ratio

    ids = [i for i in variant.by_item if i in reference.by_item and i in origin.by_item]
    return retention_ratio([variant.by_item[i] for i in ids], [reference.by_item[i] for i in ids],
                           [origin.by_item[i] for i in ids])


def margin_prompts(exp: Experiment, items: Sequence[Item], ctx: Context) -> tuple[list[Item], str | None]:
    """The prompts the refusal margin and KL_h are read on, and the attack they come from (None: the dataset's).

    Why: R and KL_h must read the prompts the decision ASR was measured on. A backdoor fine-tune moves the
    margin of the *triggered* request; read on the plain request, R says the fine-tune changed little. So when
    the decision attack (the experiment's first) only rewrites the prompt and gives exactly one single-turn
    conversation per item (``backdoor:units=trigger``, ``direct``), its prompts are used, with the items' ids.
    Anything else (TAP's search, several templates per item, the clean-and-triggered pair) reads the dataset's
    own prompts, as before."""
    from safetydrift.attacks.base import PromptAttack
    from safetydrift.runner import make_attack

    attack = make_attack(exp.attacks[0], ctx) if exp.attacks else None
    if not isinstance(attack, PromptAttack):
        return list(items), None
    out = []
    for it in items:
        convs = attack.conversations(it)
        if len(convs) != 1 or len(convs[0][1]) != 1 or convs[0][1][0][0] != "user":
            return list(items), None
        out.append(replace(it, prompt=convs[0][1][0][1]))
    if all(a.prompt == b.prompt for a, b in zip(out, items, strict=True)):
        return list(items), None
    return out, exp.attacks[0]


def _read_margins(exp: Experiment, ctx: Context) -> tuple[dict[str, Margins], dict[str, tuple[float | None, int]],
                                                          str | None]:
    """Each local variant's margins and its first-token KL to its reference on the harmful prompts (KL_h), one
    model in memory at a time, with a progress bar (and ETA) over prompts. Both are memoised (margins by model,
    KL_h by pair); a model is read only when its margins or a KL_h it takes part in are not in the memo."""
    from safetydrift.analysis.margin import Margins, harmful_kl, refusal_margins
    from safetydrift.datasets import load_dataset

    ds = load_dataset(exp.datasets[0], ctx)  # what the safety eval ran (a run sets no limit)
    items, prompts = margin_prompts(exp, ds.items, ctx)
    memo = _readings(ctx)
    settings = {"items": ds.sha256, "system_prompt": exp.gen.system_prompt, "device": ctx.device}
    if prompts is not None:  # the decision attack's prompts: keyed by them (the dataset's key is unchanged)
        from safetydrift.datasets.files import items_hash

        settings.update(items=items_hash(items), prompts=prompts)
    resolved = {v.name: ctx.resolve(v.recipe) for v in exp.variants}

    margin_keys = {name: _material(model=margin_model_key(model, ctx), **settings)
                   for name, model in resolved.items()}  # once: a GGUF's key resolves its recipe's prefixes

    def margin_key(name: str) -> dict[str, Any] | None:
        return margin_keys[name]

    def kl_key(name: str, ref: str) -> dict[str, Any] | None:
        return _material(variant=model_key(resolved[name]), reference=model_key(resolved[ref]), **settings)

    cached: dict[str, Margins] = {}
    for v in exp.variants:
        hit = memo.get("margins", margin_key(v.name))
        if hit is not None:
            cached[v.name] = Margins(by_item={k: float(x) for k, x in hit["by_item"].items()},
                                     n_floored=int(hit["n_floored"]), engine=hit["engine"], meta=hit["meta"],
                                     unguarded=bool(resolved[v.name].wrappers))
    local = {n for n, m in resolved.items() if m.kind in ("hf", "gguf")}
    # KL_h needs both sides' logits: only pairs of two local models with memo keys are read for it
    pairs = [(v.name, v.reference) for v in exp.variants
             if v.reference is not None and {v.name, v.reference} <= local and kl_key(v.name, v.reference) is not None]
    kls: dict[str, tuple[float | None, int]] = {}
    for name, ref in pairs:
        hit = memo.get("kl_harmful", kl_key(name, ref))
        if hit is not None:
            kls[name] = (hit["kl"], int(hit["n"]))
    need = {n for n in local if n not in cached}
    need |= {x for name, ref in pairs if name not in kls for x in (name, ref)}
    read = _per_local_model(exp, ctx, "refusal margin", len(items), lambda model, advance: refusal_margins(
        model, items, ctx, system_prompt=exp.gen.system_prompt, progress=advance), only=need)
    fresh = {name: replace(m, unguarded=bool(model.wrappers)) for name, (model, m) in read.items()}
    for name, m in fresh.items():
        memo.put("margins", margin_key(name), {"by_item": m.by_item, "n_floored": m.n_floored, "engine": m.engine,
                                               "meta": m.meta})
    for name, ref in pairs:
        if name in kls:
            continue
        # a side that could not be read (UnsupportedError) has no KL_h: remembered as such, not retried each run
        kl_h, kl_n = harmful_kl(fresh[name], fresh[ref]) if name in fresh and ref in fresh else (None, 0)
        kls[name] = (kl_h, kl_n)
        memo.put("kl_harmful", kl_key(name, ref), {"kl": kl_h, "n": kl_n})
    got = {**{n: m for n, m in cached.items() if n not in fresh}, **fresh}
    return {v.name: got[v.name] for v in exp.variants if v.name in got}, kls, prompts


def margin_model_key(model: ResolvedModel, ctx: Context) -> dict[str, Any] | None:
    """A model's key for its refusal margins: :func:`model_key`, and for a GGUF the side files of the HF
    tokenizer its refusal/compliance token sets come from (the nearest checkpoint up its recipe)."""
    from safetydrift.analysis.margin import nearest_hf_tokenizer

    key = model_key(model)
    if key is not None and model.kind == "gguf":
        tok = nearest_hf_tokenizer(model, ctx)
        key = {**key, "token_sets_from": None if tok is None else side_files(tok)}
    return key


def _readings(ctx: Context) -> Readings:
    return Readings(ctx.cache_dir / "readings")


def _material(**parts: Any) -> dict[str, Any] | None:
    """Key material, or None (never memoised) when a model in it has no weights hash."""
    return None if any(k in parts and parts[k] is None for k in ("model", "variant", "reference")) else parts


def _per_local_model(exp: Experiment, ctx: Context, label: str, n: int,
                     read: Callable[[ResolvedModel, Callable[[int], None]], T],
                     only: set[str] | None = None) -> dict[str, tuple[ResolvedModel, T]]:
    """``read(model, progress)`` for every variant with local logits, one model in memory at a time, with a
    progress bar (and ETA) over ``n`` units per model. Variants with the same weights (a guard and the model it
    guards: a guard leaves the logits alone) are read once; a model that cannot give logits is skipped with a
    warning."""
    from safetydrift.errors import UnsupportedError
    from safetydrift.runner import progress_bar

    variants = [v for v in exp.variants if only is None or v.name in only]
    resolved = {v.name: ctx.resolve(v.recipe) for v in variants}
    local = [v for v in variants if resolved[v.name].kind in ("hf", "gguf")]
    got: dict[str, tuple[ResolvedModel, T]] = {}
    by_weights: dict[tuple[str, str], T] = {}
    with progress_bar(ctx) as prog:
        task = prog.add_task(f"{label} ({n} per model)", total=len(local) * n)
        for k, v in enumerate(local):
            model, before = resolved[v.name], k * n
            key = (model.kind, str(model.path))

            def advance(done: int, before: int = before) -> None:
                prog.update(task, completed=before + done)

            if key not in by_weights:
                try:
                    by_weights[key] = read(model, advance)
                except UnsupportedError as e:
                    ctx.log(f"[yellow]{label}: {v.name}: {e}[/yellow]")
                    continue
            got[v.name] = (model, by_weights[key])
            advance(n)
    return got

"""Experiments: a grid of variants × datasets × attacks × judges, each variant compared with its reference.

``safetydrift run EXPERIMENT.yaml --out DIR`` builds what is missing (artifact cache), evaluates what is
missing (result store: resume after a crash), measures utility, runs the paired comparisons and writes
``experiment.json``, ``results.jsonl``, ``report.html``, ``figures/`` and ``tables/``.
``safetydrift demo`` is the same on a packaged config for the shipped model.

YAML::

    name: demo
    generation: {max_new_tokens: 48, seed: 0}
    variants:
      base: smollm2-135m-instruct
      aligned: {recipe: "smollm2-135m-instruct>align", reference: base}
    datasets: [advbench50]
    attacks: [direct]
    judges: [keyword]
    utility: {benign_task: 100, benign: 100}
    logitlens: {prompts: advbench50, limit: 10, variants: [aligned]}
    executor: local          # or ray
    expect:                  # claims checked against the run (safetydrift.expectations)
      - {variant: aligned, asr: down, claim: "alignment lowers ASR"}
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from safetydrift import registry
from safetydrift.context import Context
from safetydrift.errors import DataError, SafetyDriftError, SpecError, UnsupportedError
from safetydrift.expectations import Expectation, check_expectations, parse_expectations, runner_up_pairs
from safetydrift.provenance import library_versions
from safetydrift.runner import EvalRequest, run_eval
from safetydrift.spec import parse_component, parse_recipe, recipe_from_yaml
from safetydrift.store import ResultStore, atomic_write_text
from safetydrift.types import GenerationConfig

TOP_KEYS = {"name", "description", "generation", "variants", "datasets", "attacks", "judges", "utility",
            "logitlens", "executor", "backend", "expect"}


@dataclass
class VariantDecl:
    name: str
    recipe: str
    reference: str | None = None
    family: str | None = None  # groups a fidelity sweep (e.g. "bitdelta") for the frontier figure


@dataclass
class UtilityConfig:
    benign_task: int = 100  # benign-task eval items (exact match); 0 disables
    benign: int | None = None  # benign instructions for over-refusal; None = all, 0 disables
    task_tokens: int = 16
    benign_tokens: int = 48
    ppl_texts: int = 16  # benign texts for perplexity / KL; 0 disables
    refusal_judge: str = "keyword"


@dataclass
class LensConfig:
    prompts: str = "advbench50"
    limit: int = 10
    variants: list[str] = field(default_factory=list)
    top_k: int = 5
    leading_space: bool = False  # also count " I", " Sure"… (for templates whose response follows a space)


@dataclass
class Experiment:
    name: str
    variants: list[VariantDecl]
    datasets: list[str]
    attacks: list[str]
    judges: list[str]
    gen: GenerationConfig
    utility: UtilityConfig | None
    logitlens: LensConfig | None
    executor: str = "local"
    backend: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    expect: list[Expectation] = field(default_factory=list)

    def variant(self, name: str) -> VariantDecl:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


# ---------------------------------------------------------------------------------------- loading
def _as_list(obj: Any, key: str, src: str) -> list[str]:
    if obj is None:
        return []
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
        return list(obj)
    raise DataError(f"{src}: '{key}' must be a string or a list of strings")


def _dataclass_from(cls: Any, obj: Any, key: str, src: str) -> Any:
    if obj is None or obj is False:
        return None
    if obj is True:
        return cls()
    if not isinstance(obj, dict):
        raise DataError(f"{src}: '{key}' must be a mapping")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(obj) - known)
    if unknown:
        raise DataError(f"{src}: unknown setting '{key}.{unknown[0]}' (known: {', '.join(sorted(known))})")
    return cls(**obj)


def parse_experiment(raw: Any, src: str = "experiment") -> Experiment:
    if not isinstance(raw, dict):
        raise DataError(f"{src}: an experiment is a YAML mapping")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise DataError(f"{src}: unknown key '{unknown[0]}' (known: {', '.join(sorted(TOP_KEYS))})")
    vraw = raw.get("variants")
    if not isinstance(vraw, dict) or not vraw:
        raise DataError(f"{src}: 'variants' must be a non-empty mapping name → recipe")
    variants: list[VariantDecl] = []
    for name, v in vraw.items():
        where = f"{src}: variants.{name}"
        try:
            if isinstance(v, str):
                variants.append(VariantDecl(str(name), str(parse_recipe(v))))
            elif isinstance(v, dict):
                extra = sorted(set(v) - {"recipe", "reference", "family", "model", "transforms"})
                if extra:
                    raise DataError(f"{where}: unknown key '{extra[0]}'")
                rec = recipe_from_yaml(v["recipe"] if "recipe" in v else {k: v[k] for k in ("model", "transforms") if k in v})
                variants.append(VariantDecl(str(name), str(rec), v.get("reference"), v.get("family")))
            else:
                raise DataError(f"{where}: must be a recipe string or a mapping")
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
    seen: dict[str, str] = {}
    for v in variants:  # results are keyed by recipe: two names for one recipe would overwrite each other
        if v.recipe in seen:
            raise DataError(f"{src}: variants {seen[v.recipe]!r} and {v.name!r} have the same recipe {v.recipe!r}")
        seen[v.recipe] = v.name
    _infer_families(variants)
    fam_refs: dict[str, set[str | None]] = defaultdict(set)
    for v in variants:
        if v.family is not None:
            fam_refs[v.family].add(v.reference)
    for fam, refs in fam_refs.items():
        if len(refs) > 1:  # a frontier line or a "highest in family" across two parents means nothing
            shown = ", ".join(sorted(str(r) for r in refs))
            raise DataError(f"{src}: family {fam!r} mixes variants with different references ({shown}): "
                            "give each sweep its own family")
    names = {v.name for v in variants}
    for v in variants:
        if v.reference is not None and v.reference not in names:
            raise DataError(f"{src}: variants.{v.name}.reference: unknown variant {v.reference!r}")
        if v.reference == v.name:
            raise DataError(f"{src}: variants.{v.name} cannot be its own reference")
    gen_raw = raw.get("generation") or {}
    try:
        gen = GenerationConfig(**gen_raw)
    except TypeError as e:
        raise DataError(f"{src}: generation: {e}") from None
    exp = Experiment(
        name=str(raw.get("name") or Path(src).stem),
        variants=variants,
        datasets=_as_list(raw.get("datasets", ["advbench50"]), "datasets", src),
        attacks=_as_list(raw.get("attacks", ["direct"]), "attacks", src),
        judges=_as_list(raw.get("judges", ["keyword"]), "judges", src),
        gen=gen,
        utility=_dataclass_from(UtilityConfig, raw.get("utility", {}), "utility", src),
        logitlens=_dataclass_from(LensConfig, raw.get("logitlens"), "logitlens", src),
        executor=str(raw.get("executor", "local")),
        backend=raw.get("backend"),
        raw=raw,
        expect=parse_expectations(raw.get("expect"), names, src),
    )
    if exp.executor not in EXECUTORS:
        raise DataError(f"{src}: unknown executor {exp.executor!r} (known: {', '.join(EXECUTORS)})")
    if exp.logitlens:
        for n in exp.logitlens.variants:
            if n not in names:
                raise DataError(f"{src}: logitlens.variants: unknown variant {n!r}")
    validate_specs(exp)
    return exp


FAMILY_STAGES = ("bitdelta", "quantize")  # last stages whose settings sweep a compression fidelity


def _infer_families(variants: list[VariantDecl]) -> None:
    """Give undeclared compression variants a family: the last stage's name, per parent and reference.

    Done once here so the frontier figure and ``highest``/``lowest`` expectations group the same variants.
    Sweeps of the same stage on other parents (or against other references) get that in the name, so
    their members never mix.
    """
    groups: dict[tuple[str, str, str | None], list[VariantDecl]] = defaultdict(list)
    for v in variants:
        r = parse_recipe(v.recipe)
        if v.family is None and r.transforms and r.transforms[-1].name in FAMILY_STAGES:
            groups[(r.transforms[-1].name, str(r.parent), v.reference)].append(v)
    stages = [stage for stage, _parent, _ref in groups]
    parents = [(stage, parent) for stage, parent, _ref in groups]
    for (stage, parent, ref), members in groups.items():
        name = stage
        if stages.count(stage) > 1:
            name = f"{stage} of {parent}" + (f" vs {ref}" if parents.count((stage, parent)) > 1 else "")
        for v in members:
            v.family = name


def validate_specs(exp: Experiment) -> None:
    """Every name must be registered before anything is built or run (fail fast, one line)."""
    for v in exp.variants:
        r = parse_recipe(v.recipe)
        registry.sources.get(r.model.name)
        for t in r.transforms:
            registry.transforms.get(t.name)
    for a in exp.attacks:
        registry.attacks.get(parse_component(a).name)
    for j in exp.judges:
        registry.judges.get(parse_component(j).name)


def load_experiment(path: Path) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"experiment file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    return parse_experiment(raw, str(path))


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("safetydrift") / "configs" / name))


# ---------------------------------------------------------------------------------------- executors
Records = list[dict[str, Any]]


def _eval_local(reqs: list[EvalRequest], ctx: Context, store: ResultStore) -> list[Records]:
    """Run each request in turn; per request, exactly the records it asked for (old and new)."""
    return [run_eval(req, ctx, store) for req in reqs]


def _eval_ray(reqs: list[EvalRequest], ctx: Context, store: ResultStore) -> list[Records]:
    """One Ray task per (model, dataset, attack) cell, each with its own store file, merged afterwards.

    Variants are built first by the driver (they share the artifact cache), so tasks only generate. A
    task returns its own request's records, so a part file left by an earlier configuration never leaks in.
    """
    try:
        import ray
    except ImportError:
        raise UnsupportedError("executor 'ray' needs Ray: pip install 'safetydrift[ray]'") from None
    import dataclasses

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)

    @ray.remote
    def cell(req_dict: dict[str, Any], cache_dir: str, part: str) -> list[dict[str, Any]]:
        from safetydrift.context import Context as C
        from safetydrift.runner import EvalRequest as R
        from safetydrift.store import ResultStore as S

        d = dict(req_dict)
        d["gen"] = GenerationConfig(**d["gen"])
        c = C(cache_dir=Path(cache_dir), quiet=True)
        return run_eval(R(**d), c, S(Path(part)))

    parts_dir = store.path.parent / "parts"
    parts_dir.mkdir(exist_ok=True)
    futures, owner = [], []
    for i, req in enumerate(reqs):
        for j, m in enumerate(req.models):
            single = dataclasses.replace(req, models=[m])
            d = dataclasses.asdict(single)
            futures.append(cell.remote(d, str(ctx.cache_dir), str(parts_dir / f"cell-{i}-{j}.jsonl")))
            owner.append(i)
    per_req: list[Records] = [[] for _ in reqs]
    for i, recs in zip(owner, ray.get(futures), strict=True):
        store.append(recs)
        per_req[i].extend(recs)
    return per_req


EXECUTORS = {"local": _eval_local, "ray": _eval_ray}


# ---------------------------------------------------------------------------------------- analysis
def _by_sample(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[tuple[str, str], str]]:
    """(model, dataset, attack, judge) → {(item_id, unit): verdict}."""
    out: dict[tuple[str, str, str, str], dict[tuple[str, str], str]] = defaultdict(dict)
    for r in records:
        out[(r["model"], r["dataset"], r["attack"], r["judge"])][(r["item_id"], r["unit"])] = r["verdict"]
    return out


def _run_order(unit: str) -> tuple[int, int | str]:
    """``run=2`` before ``run=10``."""
    n = unit.partition("=")[2]
    return (0, int(n)) if n.isdigit() else (1, n)


def asr_rows(exp: Experiment, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from safetydrift.stats import asr_summary, runs_summary

    by_recipe = {v.recipe: v.name for v in exp.variants}
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["model"] in by_recipe:
            groups[(r["model"], r["dataset"], r["attack"], r["judge"])].append(r)
    rows = []
    for (model, ds, attack, judge), recs in groups.items():
        s = asr_summary([r["verdict"] for r in recs], [r.get("category") or "uncategorized" for r in recs],
                        clusters=[r["item_id"] for r in recs])
        runs = None
        per_run: dict[str, list[str]] = defaultdict(list)
        for r in recs:
            if str(r["unit"]).startswith("run="):
                per_run[r["unit"]].append(r["verdict"])
        if len(per_run) > 1:
            rates = []
            for key in sorted(per_run, key=_run_order):
                sc = [v for v in per_run[key] if v != "unscorable"]
                if sc:
                    rates.append(sum(v == "success" for v in sc) / len(sc))
            runs = {"per_run": rates, **runs_summary(rates)} if rates else None
        rows.append({"variant": by_recipe[model], "recipe": model, "dataset": ds, "attack": attack, "judge": judge,
                     **s, "runs": runs})
    return rows


Cell = tuple[str, str, str]  # (dataset, attack, judge) as the records name them


def _paired_row(samples: dict[tuple[str, str, str, str], dict[tuple[str, str], str]], variant: VariantDecl,
                other: VariantDecl, cell: Cell, kind: str) -> dict[str, Any] | None:
    """One paired test of ``variant`` against ``other`` on the (item, unit)s both scored."""
    from safetydrift.stats import compare_paired

    verdicts, ref_verdicts = samples.get((variant.recipe, *cell)), samples.get((other.recipe, *cell))
    if not verdicts or not ref_verdicts:
        return None
    keys = [k for k in verdicts if k in ref_verdicts
            and verdicts[k] != "unscorable" and ref_verdicts[k] != "unscorable"]
    if not keys:
        return None
    a = [ref_verdicts[k] == "success" for k in keys]
    b = [verdicts[k] == "success" for k in keys]
    c = compare_paired(a, b, clusters=[item for item, _unit in keys])
    return {"variant": variant.name, "reference": other.name, "dataset": cell[0], "attack": cell[1],
            "judge": cell[2], "kind": kind, "n_pairs": c["n_pairs"], "n_items": c["n_items"], "test": c["test"],
            "asr_ref": c["asr_a"], "asr_variant": c["asr_b"], "diff": c["diff"],
            "diff_ci": list(c["diff_ci"]), "p_exact": c["p_exact"], "p_midp": c["p_midp"],
            "rrr": c.get("rrr"), "rrr_ci": list(c["rrr_ci"]) if c.get("rrr_ci") else None,
            "b01": c.get("b01"), "b10": c.get("b10")}


def comparisons(exp: Experiment, records: list[dict[str, Any]],
                extra: list[tuple[str, str, Cell]] | None = None) -> list[dict[str, Any]]:
    """Paired tests of every variant against its declared reference (``kind`` "reference"), plus the
    ``extra`` (variant, other, cell) tests that expectations need (``kind`` "expectation", e.g. the worst
    level against the runner-up), all Holm-corrected together as one family of the run.

    The unit of evidence is the item: where an item has several units (TAP runs, templates) the test is
    clustered by item (stats.compare_paired).
    """
    from safetydrift.stats import holm

    samples = _by_sample(records)
    out = []
    for v in exp.variants:
        if v.reference is None:
            continue
        ref = exp.variant(v.reference)
        for (model, ds, attack, judge) in samples:
            if model == v.recipe and (row := _paired_row(samples, v, ref, (ds, attack, judge), "reference")):
                out.append(row)
    for name, other, cell in extra or []:
        if row := _paired_row(samples, exp.variant(name), exp.variant(other), cell, "expectation"):
            out.append(row)
    if out:
        for row, p in zip(out, holm([r["p_exact"] for r in out]), strict=True):
            row["p_holm"] = p
    return out


def _kappa(a: list[bool], b: list[bool]) -> float | None:
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if math.isclose(pe, 1.0) else (po - pe) / (1 - pe)


def judge_agreement(records: list[dict[str, Any]], judges: list[str]) -> list[dict[str, Any]]:
    per: dict[str, dict[tuple[str, ...], str]] = defaultdict(dict)
    for r in records:
        per[r["judge"]][(r["model"], r["dataset"], r["attack"], r["item_id"], r["unit"])] = r["verdict"]
    rows = []
    names = [j for j in judges if j in per]
    for i, ja in enumerate(names):
        for jb in names[i + 1 :]:
            keys = [k for k, v in per[ja].items() if k in per[jb] and v != "unscorable" and per[jb][k] != "unscorable"]
            a = [per[ja][k] == "success" for k in keys]
            b = [per[jb][k] == "success" for k in keys]
            rows.append({"judge_a": ja, "judge_b": jb, "n": len(keys),
                         "agreement": (sum(x == y for x, y in zip(a, b, strict=True)) / len(keys)) if keys else None,
                         "kappa": _kappa(a, b)})
    return rows


def direction_flips(comps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str, str], dict[str, float]] = defaultdict(dict)
    for c in comps:
        groups[(c["variant"], c["reference"], c["dataset"], c["attack"])][c["judge"]] = c["diff"]
    flips = []
    for (v, ref, ds, atk), diffs in groups.items():
        if any(d > 0 for d in diffs.values()) and any(d < 0 for d in diffs.values()):
            flips.append({"variant": v, "reference": ref, "dataset": ds, "attack": atk, "diffs": diffs})
    return flips


# ---------------------------------------------------------------------------------------- running
def _utility_requests(exp: Experiment) -> list[EvalRequest]:
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


def _utility_rows(exp: Experiment, records: list[dict[str, Any]], ctx: Context,
                  timings: dict[str, float]) -> list[dict[str, Any]]:
    u = exp.utility
    if u is None:
        return []
    rows = []
    for v in exp.variants:
        task = [r for r in records if r["model"] == v.recipe and r["dataset"].startswith("benign-task")
                and r["judge"] == "exact-match"]
        ben = [r for r in records if r["model"] == v.recipe and r["dataset"].startswith("benign")
               and not r["dataset"].startswith("benign-task") and r["judge"] == u.refusal_judge]
        task_sc = [r for r in task if r["verdict"] != "unscorable"]
        ben_sc = [r for r in ben if r["verdict"] != "unscorable"]
        rows.append({
            "variant": v.name,
            "benign_task_acc": (sum(r["verdict"] == "success" for r in task_sc) / len(task_sc)) if task_sc else None,
            "benign_task_n": len(task_sc),
            # over-refusal: the refusal judge says "fail" (a refusal) on a benign request
            "over_refusal": (sum(r["verdict"] == "fail" for r in ben_sc) / len(ben_sc)) if ben_sc else None,
            "over_refusal_n": len(ben_sc),
            "ppl": None,
            "kl_to_reference": None,
        })
    if u.ppl_texts:
        t0 = time.time()
        _ppl_kl(exp, rows, ctx, u.ppl_texts)
        timings["utility_ppl_kl"] = round(time.time() - t0, 1)
    return rows


def _ppl_kl(exp: Experiment, rows: list[dict[str, Any]], ctx: Context, n_texts: int) -> None:
    """Perplexity on held-out benign text and next-token KL(reference ‖ variant) for every variant with
    local weights: HF checkpoints through transformers, GGUF builds through llama.cpp as served."""
    from safetydrift.analysis.metrics import BENIGN_TEXTS, drift_metrics
    from safetydrift.runner import progress_bar

    texts = list(BENIGN_TEXTS)[:n_texts]
    by_name = {r["variant"]: r for r in rows}
    resolved = {v.name: ctx.resolve(v.recipe) for v in exp.variants}
    local = [v for v in exp.variants if resolved[v.name].kind in ("hf", "gguf")]
    with progress_bar(ctx) as prog:
        task = prog.add_task("perplexity / KL", total=len(local))
        for v in local:
            ref = resolved[v.reference] if v.reference is not None else None
            if ref is not None and ref.kind not in ("hf", "gguf"):
                ref = None
            d = drift_metrics(resolved[v.name], ref, texts, device=ctx.device)
            by_name[v.name]["ppl"] = float(d["ppl"])
            if "kl_to_reference" in d:
                by_name[v.name]["kl_to_reference"] = float(d["kl_to_reference"])
            prog.advance(task)


def _variant_rows(exp: Experiment, ctx: Context, build_times: dict[str, float]) -> list[dict[str, Any]]:
    from safetydrift.variants.builder import load_manifest
    from safetydrift.variants.inspect import disk_bytes

    rows = []
    for v in exp.variants:
        m = ctx.resolve(v.recipe)
        manifest = load_manifest(m)
        size = disk_bytes(m.path) if m.path is not None else None
        bpw = None
        if manifest:
            prov = manifest.get("provenance") or {}
            bpw = prov.get("bits_per_weight")
            extra = manifest.get("extra_files") or {}
            if "delta.safetensors" in extra:  # what is stored for a delta variant: the packed delta plus
                # the uncompressed tensors it takes from the fine-tune (rest=ft), without which it cannot
                # be rebuilt from the reference
                size = int(extra["delta.safetensors"]) + int(extra.get("rest.safetensors", 0))
        family = v.family
        # A serving wrapper (guard) has no artifact: the manifest found is its parent's, whose build time
        # is not this variant's. Otherwise the manifest's time is the build's cost even when cached now.
        own = bool(manifest) and manifest.get("recipe") == v.recipe
        build_seconds = manifest.get("build_seconds") if own else build_times.get(v.name)
        rows.append({"name": v.name, "recipe": v.recipe, "reference": v.reference, "kind": m.kind,
                     "weights_sha256": m.weights_sha256, "size_bytes": size, "bits_per_weight": bpw,
                     "build_seconds": build_seconds,
                     "manifest": manifest, "family": family, "wrappers": list(m.wrappers)})
    return rows


def _guard_rows(exp: Experiment, asr: list[dict[str, Any]], util: list[dict[str, Any]],
                records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    util_by = {u["variant"]: u for u in util}
    for v in exp.variants:
        if not parse_recipe(v.recipe).transforms or parse_recipe(v.recipe).transforms[-1].name != "guard":
            continue
        head = next((a for a in asr if a["variant"] == v.name and a["dataset"] == exp.datasets[0]
                     and a["attack"] == exp.attacks[0] and a["judge"] == exp.judges[0]), None)
        lat = [r.get("gen_meta", {}).get("guard_latency_s") for r in records if r["model"] == v.recipe]
        lat = [x for x in lat if isinstance(x, (int, float))]
        rows.append({"variant": v.name, "asr": head["asr"] if head else None,
                     "false_refusal": util_by.get(v.name, {}).get("over_refusal"),
                     "latency_added_s": (sum(lat) / len(lat)) if lat else None})
    return rows


def _tap_trees(records: list[dict[str, Any]], exp: Experiment, judge: str) -> list[dict[str, Any]]:
    by_recipe = {v.recipe: v.name for v in exp.variants}
    trees = []
    for r in records:
        tree = (r.get("extra") or {}).get("tree")
        if tree and r["judge"] == judge and r["model"] in by_recipe:
            trees.append({"variant": by_recipe[r["model"]], "item_id": r["item_id"], "run": r["unit"],
                          "behavior": r.get("behavior"), "tree": tree,
                          "target_queries": r["extra"].get("target_queries")})
    return trees


def run_experiment(exp: Experiment, out: Path, ctx: Context) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    timings: dict[str, float] = {}
    build_times: dict[str, float] = {}
    store = ResultStore(out / "results.jsonl")

    ctx.log(f"[bold]experiment {exp.name}[/]: {len(exp.variants)} variants")
    for v in exp.variants:  # 1. build (cached by recipe hash)
        t0 = time.time()
        ctx.resolve(v.recipe)
        build_times[v.name] = round(time.time() - t0, 1)
        timings[f"build:{v.name}"] = build_times[v.name]

    models = [v.recipe for v in exp.variants]
    reqs = [EvalRequest(models=models, dataset=ds, attack=atk, judges=exp.judges, gen=exp.gen, backend=exp.backend)
            for ds in exp.datasets for atk in exp.attacks]
    t0 = time.time()
    per_req = EXECUTORS[exp.executor](reqs, ctx, store)  # 2. safety evals
    timings["eval:safety"] = round(time.time() - t0, 1)
    t0 = time.time()
    util_records = [r for recs in EXECUTORS[exp.executor](_utility_requests(exp), ctx, store) for r in recs]
    timings["eval:utility"] = round(time.time() - t0, 1)

    # Only this run's records: a store reused with other generation settings keeps its old run keys, which
    # must never be counted or paired with this run's answers.
    safety = [r for recs in per_req for r in recs]
    records = safety + util_records
    names = _eval_names(exp, reqs, per_req)
    util = _utility_rows(exp, util_records, ctx, timings)
    asr = asr_rows(exp, safety)
    default = (names[exp.datasets[0]], names[exp.attacks[0]], names[exp.judges[0]])
    extra = runner_up_pairs(exp.expect, exp.variants, asr, default, names)
    all_comps = comparisons(exp, safety, extra)
    comps = [c for c in all_comps if c["kind"] == "reference"]
    result: dict[str, Any] = {
        "name": exp.name,
        "config": exp.raw,
        "variants": _variant_rows(exp, ctx, build_times),
        "asr": asr,
        "comparisons": comps,
        "expectation_tests": [c for c in all_comps if c["kind"] == "expectation"],
        "utility": util,
        "judge_agreement": judge_agreement(safety, exp.judges) if len(exp.judges) > 1 else [],
        "direction_flips": direction_flips(comps),
        "guards": _guard_rows(exp, asr, util, records),
        "tap_trees": _tap_trees(safety, exp, exp.judges[0]),
        "logitlens": None,
        "expectations": check_expectations(exp.expect, exp.variants, asr, all_comps, util, default, names),
    }
    if exp.logitlens and exp.logitlens.variants:  # 4. LogitLens
        t0 = time.time()
        result["logitlens"] = _logitlens(exp, out, ctx)
        timings["logitlens"] = round(time.time() - t0, 1)
    result["provenance"] = {"libraries": library_versions(), "started": started,
                            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "cache_dir": str(ctx.cache_dir), "generation": exp.gen.to_dict(), "timings_s": timings,
                            "datasets": sorted({(r["dataset"], r["dataset_sha256"]) for r in records})}
    atomic_write_text(out / "experiment.json", json.dumps(result, indent=2, default=str))
    from safetydrift.runner import summarize  # the same summary.json contract as `safetydrift eval`

    if safety:
        atomic_write_text(out / "summary.json", json.dumps(summarize(safety), indent=2))
    t0 = time.time()
    _render(result, records, out)
    timings["report"] = round(time.time() - t0, 1)
    return result


def _eval_names(exp: Experiment, reqs: list[EvalRequest], per_req: list[Records]) -> dict[str, str]:
    """Each dataset, attack and judge spec as written in the YAML → the name its records carry.

    Records name a dataset by what loaded (a CSV file by its stem, ``advbench50:n=100`` by the subset it
    gave), so expectations are matched through what was measured, not by re-parsing the YAML strings.
    """
    names: dict[str, str] = {}
    for req, recs in zip(reqs, per_req, strict=True):
        if recs:
            names.setdefault(req.dataset, recs[0]["dataset"])
            names.setdefault(req.attack, recs[0]["attack"])
    for spec in [*exp.datasets, *exp.attacks, *exp.judges]:
        names.setdefault(spec, spec)
    for j in exp.judges:  # judges name themselves str(spec), as runner.make_judges builds them
        names[j] = str(parse_component(j))
    return names


def _logitlens(exp: Experiment, out: Path, ctx: Context) -> dict[str, Any]:
    from safetydrift.analysis.logitlens import plot_panels, plot_topk_heatmap, run_logitlens
    from safetydrift.datasets import load_dataset

    lens = exp.logitlens
    assert lens is not None
    ds = load_dataset(lens.prompts, ctx)
    prompts = [it.prompt for it in ds.items[: lens.limit]]
    recipes = {exp.variant(n).recipe: n for n in lens.variants}
    hf = [r for r in recipes if ctx.resolve(r).kind == "hf"]
    results = run_logitlens(hf, prompts, ctx, top_k=lens.top_k, leading_space=lens.leading_space)
    named = {recipes[r]: res for r, res in results.items()}
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    plot_panels(named, figs / "logitlens_mass.png")
    plot_topk_heatmap(named, figs / "logitlens_topk.png")
    data = {name: res.to_dict() for name, res in named.items()}
    atomic_write_text(out / "logitlens.json", json.dumps(data, indent=2))
    return {"png": {"mass": "figures/logitlens_mass.png", "topk": "figures/logitlens_topk.png"},
            "variants": list(named), "prompts": lens.prompts, "limit": lens.limit}


def _render(result: dict[str, Any], records: list[dict[str, Any]], out: Path) -> None:
    try:
        from safetydrift.report.experiment_report import render_experiment_report
    except ImportError:  # the rich report is optional for a library user; the simple one always works
        from safetydrift.report.html import render_eval_report
        from safetydrift.runner import summarize

        render_eval_report(records, summarize(records), out / "report.html", title=result["name"])
        return
    render_experiment_report(result, records, out)


def print_headline(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    util = {u["variant"]: u for u in result.get("utility", [])}
    comps = {(c["variant"], c["judge"]): c for c in result.get("comparisons", [])}
    first = result["asr"][0] if result.get("asr") else None
    t = Table(title=f"{result['name']}: ASR ({first['dataset']}, {first['attack']}, {first['judge']})" if first else result["name"])
    for col in ("variant", "ASR", "95% CI", "Δ vs ref", "p (Holm)", "task acc", "over-refusal", "size"):
        t.add_column(col, overflow="fold")
    for v in result["variants"]:
        a = next((x for x in result["asr"] if x["variant"] == v["name"] and first and x["dataset"] == first["dataset"]
                  and x["attack"] == first["attack"] and x["judge"] == first["judge"]), None)
        c = comps.get((v["name"], first["judge"])) if first else None
        u = util.get(v["name"], {})

        def pct(x: float | None) -> str:
            return "–" if x is None else f"{100 * x:.0f}%"

        size = v.get("size_bytes")
        t.add_row(
            v["name"],
            pct(a["asr"]) if a else "–",
            f"{pct(a['ci_low'])}–{pct(a['ci_high'])}" if a else "–",
            (f"{100 * c['diff']:+.0f} pts vs {c['reference']}" if c else "–"),
            (f"{c['p_holm']:.3g}" if c else "–"),
            pct(u.get("benign_task_acc")),
            pct(u.get("over_refusal")),
            "–" if size is None else f"{size / 2**20:.0f} MiB",
        )
    Console().print(t)
    if result.get("expectations"):
        e = Table(title="expected (literature) vs observed (this run)")
        for col in ("variant", "expected ASR", "claim", "verdict", "why", "utility"):
            e.add_column(col, overflow="fold")
        for x in result["expectations"]:
            e.add_row(x["variant"], x["expected"], x["claim"] or "–", x["verdict"], x["why"], x["utility_verdict"] or "–")
        Console().print(e)


def ensure_not_running_inside(out: Path) -> None:
    if (out / "experiment.json").exists() and not (out / "results.jsonl").exists():
        raise SafetyDriftError(f"{out} has an experiment.json but no results.jsonl: refusing to mix runs")


# ---------------------------------------------------------------------------------------- CLI
def _register_cli() -> None:
    import argparse

    from safetydrift.cli import _ctx, command

    @command("run", "build and evaluate an experiment grid from YAML, then compare and report")
    def _run_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("experiment", help="experiment YAML (see configs/)")
        p.add_argument("--out", default=None, help="output directory (default out/<name>)")

    @_run_args.bind
    def _run(args: argparse.Namespace) -> int:
        exp = load_experiment(Path(args.experiment))
        out = Path(args.out or f"out/{exp.name}")
        ctx = _ctx(args)
        result = run_experiment(exp, out, ctx)
        print_headline(result)
        ctx.log(f"wrote {out / 'report.html'} (and experiment.json, results.jsonl, figures/, tables/)")
        return 0

    @command("demo", "the main job: base → align → harmful fine-tune → BitDelta / GGUF / guard, compared")
    def _demo_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="smollm2-135m-instruct", choices=sorted(DEMO_CONFIGS))
        p.add_argument("--out", default="out/demo")

    @_demo_args.bind
    def _demo(args: argparse.Namespace) -> int:
        exp = load_experiment(packaged_config(DEMO_CONFIGS[args.model]))
        ctx = _ctx(args)
        result = run_experiment(exp, Path(args.out), ctx)
        print_headline(result)
        ctx.log(f"wrote {Path(args.out) / 'report.html'}")
        return 0


DEMO_CONFIGS = {"smollm2-135m-instruct": "demo-smollm2.yaml", "qwen2.5-coder-0.5b-instruct": "demo-qwen.yaml"}

_register_cli()

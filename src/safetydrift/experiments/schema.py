"""The experiment YAML → a typed, validated :class:`Experiment` (nothing is built or run here).

YAML::

    name: demo
    generation: {max_new_tokens: 48, seed: 0}
    variants:
      base: smollm2-135m-instruct
      aligned: {recipe: "smollm2-135m-instruct>align", reference: base}
    datasets: [advbench50]
    attacks: [direct]
    judges: [refusal, keyword]   # the default
    utility: {benign_task: 100, benign: 100}   # also mc: 200 (log-likelihood multiple choice)
    logitlens: {prompts: advbench50, limit: 10, variants: [aligned]}
    executor: local          # or ray
    sweep: {base: ..., attack: [...], compress: {...}, seeds: [0]}   # axes → variants (experiments/sweep.py)
    expect:                  # claims checked against the run (safetydrift.expectations)
      - {variant: aligned, asr: down, claim: "alignment lowers ASR"}

Every name must be registered and every cross-reference (a variant's reference, a LogitLens variant,
an expectation's variant) must exist before anything is built: a bad file fails in one line.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from safetydrift.errors import DataError, SafetyDriftError, SpecError
from safetydrift.expectations import Expectation, parse_expectations
from safetydrift.experiments.executors import EXECUTORS
from safetydrift.experiments.sweep import SweepSpec, merge_variants, parse_sweep
from safetydrift.judges.base import DEFAULT_JUDGES
from safetydrift.spec import parse_recipe, recipe_from_yaml
from safetydrift.types import GenerationConfig
from safetydrift.validation import check_component, check_recipe

TOP_KEYS = {"name", "description", "generation", "variants", "datasets", "attacks", "judges", "utility",
            "logitlens", "executor", "backend", "expect", "sweep"}
FAMILY_STAGES = ("bitdelta", "quantize")  # last stages whose settings sweep a compression fidelity


@dataclass(frozen=True)
class VariantDecl:
    name: str
    recipe: str
    reference: str | None = None
    family: str | None = None  # groups a fidelity sweep (e.g. "bitdelta") for the frontier figure


@dataclass(frozen=True)
class UtilityConfig:
    benign_task: int = 100  # benign-task eval items (exact match); 0 disables
    benign: int | None = None  # benign instructions for over-refusal; None = all, 0 disables
    task_tokens: int = 16
    benign_tokens: int = 48
    ppl_texts: int = 16  # benign texts for perplexity / KL; 0 disables
    refusal_judge: str = "keyword"
    margin: bool = True  # refusal margin on the first dataset's prompts, vs the reference (analysis/margin.py)
    mc: int = 0  # mc-utility items scored by log-likelihood, no generation (analysis/mc.py); 0 disables
    mc_format: str = "plain"  # "plain": lm-eval's "Question: …\nAnswer:" (measured higher); "chat": the chat template

    def __post_init__(self) -> None:
        if not isinstance(self.margin, bool):  # a quoted "false" or a 0 would otherwise be read as a switch
            raise DataError(f"utility.margin must be true or false, not {self.margin!r}")
        if isinstance(self.mc, bool) or not isinstance(self.mc, int) or self.mc < 0:
            raise DataError(f"utility.mc must be a number of items (0 disables), not {self.mc!r}")
        if self.mc_format not in ("chat", "plain"):
            raise DataError(f"utility.mc_format must be chat or plain, not {self.mc_format!r}")


@dataclass(frozen=True)
class LensConfig:
    prompts: str = "advbench50"
    limit: int = 10
    variants: list[str] = field(default_factory=list)
    top_k: int = 5
    leading_space: bool = False  # also count " I", " Sure"… (for templates whose response follows a space)


@dataclass(frozen=True)
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
    warnings: tuple[str, ...] = ()  # repeated inputs that were dropped (shown when the run starts)
    sweep: SweepSpec | None = None  # the axes a ``sweep:`` block expanded into variants (experiments/sweep.py)

    def variant(self, name: str) -> VariantDecl:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


def _as_list(obj: Any, key: str, src: str, warnings: list[str] | None = None) -> list[str]:
    """A string or a list of strings; a repeated entry is kept once (it would double n), with a warning."""
    if obj is None:
        return []
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list) and all(isinstance(x, str) for x in obj):
        unique = list(dict.fromkeys(obj))
        if len(unique) < len(obj) and warnings is not None:
            warnings.append(f"{src}: '{key}' lists an entry twice; it is evaluated once")
        return unique
    raise DataError(f"{src}: '{key}' must be a string or a list of strings")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with a repeated key (two variants named alike would otherwise
    silently keep only the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


C = TypeVar("C")


def _dataclass_from(cls: type[C], obj: Any, key: str, src: str) -> C | None:
    if obj is None or obj is False:
        return None
    if obj is True:
        return cls()
    if not isinstance(obj, dict):
        raise DataError(f"{src}: '{key}' must be a mapping")
    known = set(getattr(cls, "__dataclass_fields__", ()))
    unknown = sorted(set(obj) - known)
    if unknown:
        raise DataError(f"{src}: unknown setting '{key}.{unknown[0]}' (known: {', '.join(sorted(known))})")
    return cls(**obj)


def _variants(vraw: Any, src: str) -> list[VariantDecl]:
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
    for d in variants:  # results are keyed by recipe: two names for one recipe would overwrite each other
        if d.recipe in seen:
            raise DataError(f"{src}: variants {seen[d.recipe]!r} and {d.name!r} have the same recipe {d.recipe!r}")
        seen[d.recipe] = d.name
    variants = infer_families(variants)
    fam_refs: dict[str, set[str | None]] = defaultdict(set)
    for d in variants:
        if d.family is not None:
            fam_refs[d.family].add(d.reference)
    for fam, refs in fam_refs.items():
        if len(refs) > 1:  # a frontier line or a "highest in family" across two parents means nothing
            shown = ", ".join(sorted(str(r) for r in refs))
            raise DataError(f"{src}: family {fam!r} mixes variants with different references ({shown}): "
                            "give each sweep its own family")
    names = {d.name for d in variants}
    for d in variants:
        if d.reference is not None and d.reference not in names:
            raise DataError(f"{src}: variants.{d.name}.reference: unknown variant {d.reference!r}")
        if d.reference == d.name:
            raise DataError(f"{src}: variants.{d.name} cannot be its own reference")
    return variants


def parse_experiment(raw: Any, src: str = "experiment") -> Experiment:
    if not isinstance(raw, dict):
        raise DataError(f"{src}: an experiment is a YAML mapping")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise DataError(f"{src}: unknown key '{unknown[0]}' (known: {', '.join(sorted(TOP_KEYS))})")
    sweep = parse_sweep(raw["sweep"], src) if "sweep" in raw else None
    variants = _variants(merge_variants(sweep, raw.get("variants"), src) if sweep else raw.get("variants"), src)
    names = {v.name for v in variants}
    gen_raw = raw.get("generation") or {}
    if not isinstance(gen_raw, dict):
        raise DataError(f"{src}: generation must be a mapping")
    try:
        gen = GenerationConfig(**gen_raw)
    except TypeError as e:
        raise DataError(f"{src}: generation: {e}") from None
    except SafetyDriftError as e:  # a value of the wrong type or out of range ("lots" tokens)
        raise DataError(f"{src}: {e}") from None
    warnings: list[str] = []
    exp = Experiment(
        name=str(raw.get("name") or Path(src).stem),
        variants=variants,
        datasets=_as_list(raw.get("datasets", ["advbench50"]), "datasets", src, warnings),
        attacks=_as_list(raw.get("attacks", ["direct"]), "attacks", src, warnings),
        judges=_as_list(raw.get("judges", list(DEFAULT_JUDGES)), "judges", src, warnings),
        gen=gen,
        utility=_dataclass_from(UtilityConfig, raw.get("utility", {}), "utility", src),
        logitlens=_dataclass_from(LensConfig, raw.get("logitlens"), "logitlens", src),
        executor=str(raw.get("executor", "local")),
        backend=raw.get("backend"),
        raw=raw,
        expect=parse_expectations(raw.get("expect"), names, src),
        warnings=tuple(warnings),
        sweep=sweep,
    )
    if exp.executor not in EXECUTORS:
        raise DataError(f"{src}: unknown executor {exp.executor!r} (known: {', '.join(EXECUTORS)})")
    if exp.logitlens:
        for n in exp.logitlens.variants:
            if n not in names:
                raise DataError(f"{src}: logitlens.variants: unknown variant {n!r}")
    validate_specs(exp)
    return exp


def infer_families(variants: list[VariantDecl]) -> list[VariantDecl]:
    """Give undeclared compression variants a family: the last stage's name, per parent and reference.

    Done once at parse time so the frontier figure and ``highest``/``lowest`` expectations group the same
    variants. Sweeps of the same stage on other parents (or against other references) get that in the
    name, so their members never mix.
    """
    groups: dict[tuple[str, str, str | None], list[str]] = defaultdict(list)
    for v in variants:
        r = parse_recipe(v.recipe)
        if v.family is None and r.transforms and r.transforms[-1].name in FAMILY_STAGES:
            groups[(r.transforms[-1].name, str(r.parent), v.reference)].append(v.name)
    stages = [stage for stage, _parent, _ref in groups]
    parents = [(stage, parent) for stage, parent, _ref in groups]
    family: dict[str, str] = {}
    for (stage, parent, ref), members in groups.items():
        name = stage
        if stages.count(stage) > 1:
            name = f"{stage} of {parent}" + (f" vs {ref}" if parents.count((stage, parent)) > 1 else "")
        family.update(dict.fromkeys(members, name))
    return [replace(v, family=family[v.name]) if v.name in family else v for v in variants]


def validate_specs(exp: Experiment) -> None:
    """Every name must be registered before anything is built or run (fail fast, one line)."""
    for v in exp.variants:
        check_recipe(v.recipe)
    for a in exp.attacks:
        check_component("attacks", a)
    for j in exp.judges:
        check_component("judges", j)
    if exp.backend:  # its settings too: a typo must fail before the output directory exists
        check_component("backends", str(exp.backend))


def load_experiment(path: Path) -> Experiment:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"experiment file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise DataError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    return parse_experiment(raw, str(path))


def packaged_config(name: str) -> Path:
    return Path(str(resources.files("safetydrift") / "configs" / name))

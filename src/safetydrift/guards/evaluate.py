"""Guards on held-out material: every guard configuration measured on prompts no filter was built from.

Three sets (:mod:`safetydrift.guards.heldout`): Do-Not-Answer's harmful questions, the same kind of
requests inside in-the-wild jailbreak templates, and benign look-alikes. Per configuration: the fraction
of harmful requests blocked (input side: requests; output side: answers), the same on the templated ones,
the fraction of benign look-alikes refused, and the time the guard adds per request.

The output side needs answers. One fixed generator (by default the demo's harmful fine-tune, which
complies with nearly everything, so what stops a request is the filter) answers every request once; the
answers are kept in ``<out>/generations.jsonl`` and replayed for every configuration. Each configuration
runs through the serving path itself (:class:`~safetydrift.guards.backend.GuardedBackend`) around a
:class:`Replay` backend, so "blocked" and the latency are exactly what a served guard would give; a
filter's own model calls (SmoothLLM's perturbed copies) are never replayed, they are the guard's cost.
Each (configuration, set) outcome is kept under ``<out>/runs/``: a rerun, or a run after a crash, only
does what is missing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.markup import escape

from safetydrift.guards.backend import GuardedBackend
from safetydrift.guards.eval_table import Row, label, pooled_latency, summarise, write_outputs
from safetydrift.guards.spec import GuardConfig, parse_guard_step
from safetydrift.hashing import sha256_json
from safetydrift.spec import parse_component
from safetydrift.types import Generation, GenerationConfig

if TYPE_CHECKING:
    from safetydrift.context import Context
    from safetydrift.types import Backend, Conversation, Item, PromptFit, ResolvedModel

DEFAULT_GENERATOR = "smollm2-135m-instruct>align>finetune:data=harmful"
DEFAULT_JUDGE = "qwen2.5-coder-0.5b-instruct"
Kind = Literal["harmful", "benign"]


def default_configs(judge: str = DEFAULT_JUDGE) -> list[str]:
    """Each input filter alone, each output filter alone, and the demo's combination, with the output
    keyword rule before (``openers=project``) and after the default changed."""
    return [
        "guard:input=keyword",
        "guard:input=classifier",
        "guard:input=perplexity",
        "guard:input=smoothllm",
        "guard:output=keyword",
        "guard:output=keyword,openers=project",
        "guard:output=classifier",
        f"guard:output=llm,judge=[{judge}]",
        "guard:input=classifier,output=keyword",
        "guard:input=classifier,output=keyword,openers=project",
    ]


def normalise(spec: str) -> str:
    """``input=keyword`` and ``guard:input=keyword`` name the same configuration."""
    spec = spec.strip()
    return spec if spec == "guard" or spec.startswith("guard:") else f"guard:{spec}"


@dataclass(frozen=True)
class EvalSet:
    """One held-out set: its items, whether blocking them is right (harmful) or wrong (benign)."""

    name: str
    kind: Kind
    items: tuple[Item, ...]
    note: str

    @property
    def sha256(self) -> str:
        return sha256_json([[it.id, it.prompt] for it in self.items])


def heldout_sets(ctx: Context, n_harmful: int, n_templated: int, n_benign: int) -> list[EvalSet]:
    """The three held-out sets. Templated requests are Do-Not-Answer questions counted from the end of
    the shipped order, so they differ from the plain ones unless both together exceed the 821."""
    from safetydrift import registry
    from safetydrift.guards.heldout import inthewild_templates, templated_items

    def load(spec: str) -> tuple[Item, ...]:
        comp = parse_component(spec)
        return registry.datasets.get(comp.name)(comp, ctx).items

    dna = load("donotanswer")
    templates = inthewild_templates()
    harmful = dna[:n_harmful]
    templated = templated_items(list(reversed(dna)), templates, n_templated)
    benign = load(f"benign-lookalike:n={n_benign}")
    return [
        EvalSet("harmful", "harmful", harmful, f"Do-Not-Answer, first {len(harmful)} of {len(dna)} (4 harmful areas)"),
        EvalSet("templated", "harmful", tuple(templated),
                f"{len(templated)} other Do-Not-Answer questions in {min(len(templates), len(templated))} of "
                f"{len(templates)} in-the-wild jailbreak templates"),
        EvalSet("benign", "benign", benign, f"benign look-alikes, {len(benign)} of 260"),
    ]


def conversation(item: Item) -> Conversation:
    return [{"role": "user", "content": item.prompt}]


# --------------------------------------------------------------------------------- the generator
class Replay:
    """A backend that answers from the generator's recorded answers, and asks the generator itself for
    anything it has not recorded (a filter's own calls). The generator is loaded only when needed."""

    name = "replay"

    def __init__(self, ctx: Context, recipe: str, model: ResolvedModel, path: Path) -> None:
        self.ctx, self.recipe, self.resolved, self.path = ctx, recipe, model, path
        self.weights = model.weights_sha256 or model.spec
        self._real: Backend | None = None
        self.answers: dict[str, Generation] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.answers[row["key"]] = Generation(text=row["text"], error=row.get("error"),
                                                          n_tokens=row["n_tokens"], latency_s=row["latency_s"])

    @property
    def real(self) -> Backend:
        if self._real is None:
            self._real = self.ctx.backend(self.recipe)
        return self._real

    # a transformers generator's weights, shared with a perplexity filter that uses the guarded model
    @property
    def model(self) -> Any:
        return self.real.model  # type: ignore[attr-defined]

    @property
    def tok(self) -> Any:
        return self.real.tok  # type: ignore[attr-defined]

    def key(self, conv: Conversation, config: GenerationConfig) -> str:
        return sha256_json([self.weights, conv, config.to_dict()])

    def missing(self, convs: Sequence[Conversation], config: GenerationConfig) -> list[int]:
        return [i for i, c in enumerate(convs) if self.key(c, config) not in self.answers]

    def record(self, convs: Sequence[Conversation], config: GenerationConfig, batch: int,
               progress: Callable[[int, int], None] | None = None) -> int:
        """Generate every answer not recorded yet (in batches, appended as it goes); the number generated."""
        todo = self.missing(convs, config)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for start in range(0, len(todo), batch):
                chunk = [convs[i] for i in todo[start:start + batch]]
                for conv, g in zip(chunk, self.real.generate(chunk, config), strict=True):
                    key = self.key(conv, config)
                    self.answers[key] = Generation(text=g.text, error=g.error, n_tokens=g.n_tokens,
                                                   latency_s=g.latency_s)
                    f.write(json.dumps({"key": key, "prompt": conv[-1]["content"][:200], "text": g.text,
                                        "error": g.error, "n_tokens": g.n_tokens, "latency_s": g.latency_s},
                                       ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                if progress:
                    progress(min(start + batch, len(todo)), len(todo))
        return len(todo)

    def generate(self, conversations: list[Conversation], config: GenerationConfig) -> list[Generation]:
        out: list[Generation | None] = [self.answers.get(self.key(c, config)) for c in conversations]
        miss = [i for i, g in enumerate(out) if g is None]
        if miss:
            for i, g in zip(miss, self.real.generate([conversations[i] for i in miss], config), strict=True):
                out[i] = g
        return [Generation(text=g.text, error=g.error, n_tokens=g.n_tokens, latency_s=g.latency_s)
                for g in out if g is not None]

    def fit(self, conversations: list[Conversation], config: GenerationConfig, reserve: int = 1) -> list[PromptFit]:
        return self.real.fit(conversations, config, reserve)  # type: ignore[attr-defined]

    def provenance(self) -> dict[str, Any]:
        return {"backend": "replay", "generator": self.recipe, "weights_sha256": self.weights}


# --------------------------------------------------------------------------------- one configuration
@dataclass(frozen=True)
class Outcome:
    """What the guard did with one request: blocked (by which filter), passed, or failed."""

    item_id: str
    blocked_by: str | None
    reason: str | None
    error: str | None
    guard_latency_s: float


def _failure(g: Generation, guard: GuardConfig) -> str | None:
    """Why a request has no verdict: a filter failed, or there was no answer for an output filter to judge.
    A generator failure after the input filters passed a request is a pass for an input-only guard."""
    if g.error is None or (not guard.output and not g.error.startswith("guard ")):
        return None
    return g.error


def _cost(spec: str) -> int:
    """Filters that call a model per request (SmoothLLM's copies, an LLM judge) run last."""
    guard = parse_guard_step(parse_component(spec))
    return sum(name in ("smoothllm", "llm") for _, name in guard.filters())


def run_config(spec: str, sets: Sequence[EvalSet], replay: Replay, ctx: Context, config: GenerationConfig,
               batch: int, runs_dir: Path) -> dict[str, list[Outcome]]:
    """One configuration on every set through a served guard (opened once, only if a set is missing),
    each set's outcomes cached under ``runs_dir`` by everything that determines them: the guard's serving
    configuration, the set, the generator and the generation settings."""
    guard: GuardConfig = parse_guard_step(parse_component(spec))
    served: GuardedBackend | None = None
    out: dict[str, list[Outcome]] = {}
    for s in sets:
        key = sha256_json({"guard": guard.to_dict(), "set": s.sha256, "generator": replay.weights,
                           "config": config.to_dict(), "batch": batch, "v": 2})[:20]
        path = runs_dir / f"{key}.json"
        if path.is_file():
            out[s.name] = [Outcome(**row) for row in json.loads(path.read_text(encoding="utf-8"))["outcomes"]]
            continue
        ctx.log(escape(f"{label(spec)} on {s.name} ({len(s.items)})"))  # judge=[…] is not console markup
        served = served or GuardedBackend(replay, guard, replay.resolved, ctx)
        outcomes: list[Outcome] = []
        items = list(s.items)
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            for it, g in zip(chunk, served.generate([conversation(it) for it in chunk], config), strict=True):
                outcomes.append(Outcome(it.id, g.meta.get("blocked_by"), g.meta.get("guard_reason"),
                                        _failure(g, guard), float(g.meta.get("guard_latency_s", 0.0))))
        runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"spec": spec, "set": s.name, "guard": guard.to_dict(),
                                   "outcomes": [o.__dict__ for o in outcomes]}, indent=1))
        tmp.replace(path)
        out[s.name] = outcomes
    return out


def training_paraphrases(items: Sequence[Item]) -> set[str]:
    """Ids of harmful items with a near-duplicate (the project's own measure, ``pools.near_duplicate_pairs``)
    among the harmful requests the input classifier's head was trained on."""
    from safetydrift.datasets.pools import near_duplicate_pairs
    from safetydrift.judges.classifier import request_training_rows

    train = [t for t, label_ in request_training_rows() if label_ == 1]
    return {items[i].id for i, _, _ in near_duplicate_pairs([it.prompt for it in items], train)}


# --------------------------------------------------------------------------------- everything
def evaluate(ctx: Context, out: Path, *, generator: str = DEFAULT_GENERATOR, configs: Sequence[str] | None = None,
             n_harmful: int = 150, n_templated: int = 80, n_benign: int = 260, max_new_tokens: int = 64,
             batch: int = 16, seed: int = 0) -> list[Row]:
    """Run every configuration on every held-out set; write ``guards.csv``, ``guards.md`` and
    ``summary.json`` into ``out``; return the table's rows (:class:`~safetydrift.guards.eval_table.Row`)."""
    from safetydrift.judges.keyword import QI_2023, find_refusal

    specs = [normalise(c) for c in configs] if configs else default_configs()
    for s in specs:
        parse_guard_step(parse_component(s))  # every configuration parses before anything is loaded
    sets = heldout_sets(ctx, n_harmful, n_templated, n_benign)
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
    model = ctx.resolve(generator)
    replay = Replay(ctx, generator, model, out / "generations.jsonl")
    convs = [conversation(it) for s in sets for it in s.items]
    todo = len(replay.missing(convs, config))
    if todo:
        ctx.log(escape(f"generating {todo} answers with {generator} (max_new_tokens={max_new_tokens}), once"))
        replay.record(convs, config, batch, lambda i, n: ctx.log(f"  answers {i}/{n}"))
    outcomes: dict[str, dict[str, list[Outcome]]] = {}
    for spec in sorted(specs, key=_cost):  # cheap configurations first: their results are kept if a slow one stops
        outcomes[spec] = run_config(spec, sets, replay, ctx, config, batch, out / "runs")
    paraphrased = training_paraphrases(sets[0].items)
    refused = {s.name: sum(1 for it in s.items
                           if find_refusal(replay.generate([conversation(it)], config)[0].text, QI_2023))
               for s in sets}
    rows = summarise(specs, sets, outcomes, paraphrased)
    meta = {
        "generator": generator, "generator_weights_sha256": replay.weights,
        "generation": config.to_dict(), "batch": batch,
        "sets": {s.name: {"kind": s.kind, "n": len(s.items), "sha256": s.sha256, "note": s.note,
                          "generator_refused": refused[s.name]} for s in sets},
        "harmful_with_training_paraphrase": len(paraphrased),
        "configs": specs,
        "latency_ms": {label(spec): pooled_latency(outcomes[spec]) for spec in specs},  # mean, p50, p95
    }
    write_outputs(out, rows, meta)
    return rows

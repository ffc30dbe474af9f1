"""The report's view of an experiment result: its sections, indexes and lookups over typed rows.

The input is an :class:`~safetydrift.records.ExperimentResult` (sections are tuples of typed rows) and the
judged :class:`~safetydrift.records.Record` s. Every row field is read as an attribute, so a misspelt field is
a type error (``tests/test_typecheck.py`` runs mypy on this package). What stays open is what the records
themselves leave open: a variant's build ``manifest``, the experiment ``config`` as written, a record's
``extra`` (e.g. TAP's tree) and the category maps.

A variant may have no ASR rows and an ASR row may name a model that is not a declared variant: the lookups
return None for what was not measured, and the page shows a placeholder.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from safetydrift.records import (
    AsrRow,
    Comparison,
    DirectionFlip,
    ExpectationCheck,
    ExperimentResult,
    GuardRow,
    JudgeAgreement,
    JudgeDisagreement,
    Record,
    RunProvenance,
    TapTree,
    UtilityRow,
    VariantSummary,
)

__all__ = ["CELL_KEYS", "ExperimentView", "cell_of", "families", "split_recipe"]

CELL_KEYS = ("dataset", "attack", "judge")
"""What an evaluation is: an ASR row or a comparison is about one dataset × attack × judge."""

Cell = tuple[str, str, str]


def cell_of(row: AsrRow | Comparison) -> dict[str, str]:
    """An evaluation's dataset, attack and judge by name (for labels that show only some of them)."""
    return dict(zip(CELL_KEYS, row.cell, strict=True))


class ExperimentView:
    """The experiment result with the indexes the page needs (by variant name, by evaluation)."""

    def __init__(self, result: ExperimentResult):
        self.title = result.name or "safetydrift experiment"
        self.variants: tuple[VariantSummary, ...] = result.variants
        self.asr: tuple[AsrRow, ...] = result.asr
        self.comparisons: tuple[Comparison, ...] = result.comparisons
        self.expectation_tests: tuple[Comparison, ...] = result.expectation_tests  # e.g. worst vs runner-up
        self.expectations: tuple[ExpectationCheck, ...] = result.expectations
        self.utility: tuple[UtilityRow, ...] = result.utility
        self.agreement: tuple[JudgeAgreement, ...] = result.judge_agreement
        self.flips: tuple[DirectionFlip, ...] = result.direction_flips  # older runs only
        self.disagreements: tuple[JudgeDisagreement, ...] = result.judge_disagreements
        self.semantics_recorded = result.judge_semantics is not None  # False: an experiment.json before semantics
        self.semantics: Mapping[str, str] = result.judge_semantics or {}
        self._headline_judge = result.headline_judge
        self.trees: tuple[TapTree, ...] = result.tap_trees
        self.guards: tuple[GuardRow, ...] = result.guards
        self.provenance: RunProvenance | None = result.provenance
        self.config: Mapping[str, object] = result.config
        self.logitlens_pngs: Mapping[str, str] = result.logitlens.png if result.logitlens else {}

        self.vmap = {v.name: v for v in self.variants}
        self.recipe_to_name = {v.recipe: v.name for v in self.variants}
        names = list(self.vmap)
        for a in self.asr:
            if a.variant not in names:
                names.append(a.variant)
        self.names = names
        self.util = {u.variant: u for u in self.utility}
        self.asr_by = {(a.variant, *a.cell): a for a in self.asr}
        self.comp_by = {(c.variant, *c.cell): c for c in self.comparisons}
        # (dataset, attack) combos in order, and each one's primary judge (the first seen).
        self.combos: list[tuple[str, str]] = []
        self.primary_judge: dict[tuple[str, str], str] = {}
        for a in self.asr:
            c = (a.dataset, a.attack)
            if c not in self.primary_judge:
                self.combos.append(c)
                self.primary_judge[c] = a.judge
        self.varying = [k for i, k in enumerate(CELL_KEYS) if len({a.cell[i] for a in self.asr}) > 1]
        self.constant = {k: v for k, v in cell_of(self.asr[0]).items() if k not in self.varying} if self.asr else {}

    # ------------------------------------------------------------------------------------------ lookups

    def variant(self, name: str | None) -> VariantSummary | None:
        return self.vmap.get(name) if name is not None else None

    def utility_of(self, name: str) -> UtilityRow | None:
        return self.util.get(name)

    def asr_at(self, name: str | None, dataset: str, attack: str, judge: str) -> AsrRow | None:
        return self.asr_by.get((name, dataset, attack, judge)) if name is not None else None

    def comparison_at(self, name: str, dataset: str, attack: str, judge: str) -> Comparison | None:
        return self.comp_by.get((name, dataset, attack, judge))

    def judges(self) -> list[str]:
        """The run's judges in the experiment's order (its semantics mapping), then any other the rows name."""
        return list(dict.fromkeys([*self.semantics, *(a.judge for a in self.asr)]))

    def headline_judge(self) -> str | None:
        """The judge of the headline: as recorded, else (an older run) the first evaluation's."""
        prim = self.primary()
        return self._headline_judge or (prim[2] if prim else None)

    def second_judge(self) -> str | None:
        """The judge shown beside the headline's: the next of the same semantic, else simply the next one
        (then labelled with its own semantic, never combined with the headline's)."""
        head, judges = self.headline_judge(), self.judges()
        if head is None or head not in judges:
            return None
        rest = judges[judges.index(head) + 1:] + judges[: judges.index(head)]
        sem = self.semantics.get(head)
        return next((j for j in rest if sem is not None and self.semantics.get(j) == sem), rest[0] if rest else None)

    def asr_rows_of(self, name: str) -> list[AsrRow]:
        return [a for a in self.asr if a.variant == name]

    def ref(self, name: str) -> str | None:
        v = self.variant(name)
        return v.reference if v else None

    def primary(self) -> Cell | None:
        """(dataset, attack, judge) of the first evaluation: the one a single-number summary is about."""
        if not self.combos:
            return None
        c = self.combos[0]
        return (c[0], c[1], self.primary_judge[c])

    def primary_asr(self, name: str | None) -> float | None:
        """The ASR of ``name`` on the primary evaluation (a guard's reference), None if not measured."""
        prim = self.primary()
        a = self.asr_at(name, *prim) if name and prim else None
        return a.asr if a else None

    def eval_label(self, a: AsrRow, keys: list[str] | None = None) -> str:
        """The evaluation of a row as text: the parts that vary across the run (or ``keys``)."""
        cell = cell_of(a)
        return " · ".join(cell[k] for k in (self.varying if keys is None else keys))

    def sample_variant(self, record: Record) -> str:
        """The variant name of a judged record (records carry the recipe; a model spec names itself)."""
        return self.recipe_to_name.get(record.model, record.model)


# ------------------------------------------------------------------------------------------ families


def split_recipe(recipe: str) -> list[str]:
    """Top-level stages of a recipe (`>` inside `[...]` belongs to a nested spec)."""
    out: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in recipe:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == ">" and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def families(E: ExperimentView) -> dict[str, list[str]]:
    """Compression-fidelity families: the explicit `family`, else recipes sharing a prefix and a last stage."""
    explicit: dict[str, list[str]] = defaultdict(list)
    inferred: dict[str, list[str]] = defaultdict(list)
    for v in E.variants:
        if v.family:
            explicit[v.family].append(v.name)
            continue
        stages = split_recipe(v.recipe)
        if len(stages) >= 2:
            stage = stages[-1].split(":", 1)[0].strip()
            inferred[f"{' > '.join(stages[:-1])} > {stage}"].append(v.name)
    fams = dict(explicit)
    for k, members in inferred.items():
        if len(members) >= 2:
            fams[k.rsplit(" > ", 1)[-1] if k.rsplit(" > ", 1)[-1] not in fams else k] = members
    return fams

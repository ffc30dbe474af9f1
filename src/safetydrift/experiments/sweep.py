"""The ``sweep:`` block of an experiment: axes as lists, expanded into ordinary variants.

YAML::

    sweep:
      base: "smollm2-135m-instruct>align"        # the aligned model every fine-tune starts from
      attack:                                      # the dose axis: a fine-tune per dose
        - {dose: 10, recipe: "finetune:data=harmful,lr=1e-4,n=10,epochs=1"}
        - {dose: 100, recipe: "finetune:data=harmful,lr=1e-4,n=100,epochs=1", label: d100}
      compress:                                    # label → the stage(s) appended to each fine-tune
        bitdelta-initial: "bitdelta:heal=false"
        scale: "bitdelta:scale=0.7"                # a pure-shrink control (found by its scale=, or matched=true:
                                                   # BitDelta-Initial's own shrink per matrix, preferred)
        rest-ref: "bitdelta:heal=false,rest=ref"   # its twin (the same settings, rest=ft) is bitdelta-initial
      seeds: [0, 1, 2]                             # each fine-tune's seed= (default [0])
      lens: 10                                     # LogitLens prompts at the dose where the lines part (0: off)

expands into ``aligned`` (the base), ``<dose>-s<seed>-ft`` (reference: the base) and
``<dose>-s<seed>-<label>`` (reference: that fine-tune), so the build cache, the store, the paired tests and
the report treat a map like any experiment. Everything here is pure (no registry, no I/O): the schema calls
:func:`parse_sweep`, and the names and recipes depend on the YAML alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from safetydrift.errors import DataError, SpecError
from safetydrift.spec import parse_component, parse_recipe

SWEEP_KEYS = {"base", "base_name", "attack", "compress", "seeds", "scale_control", "lens"}
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")  # no '-': it separates dose, seed and compression
FT_LABEL = "ft"

Role = Literal["base", "finetune", "compressed"]


@dataclass(frozen=True)
class Dose:
    """One point of the dose axis: a fine-tuning attack (transform stages) and its plotted value."""

    label: str
    value: float
    stages: str  # e.g. "finetune:data=harmful,n=10"


@dataclass(frozen=True)
class SweepCell:
    """One variant of the map, with where it sits on the axes."""

    name: str
    role: Role
    recipe: str
    reference: str | None = None
    dose: str | None = None
    dose_value: float | None = None
    seed: int | None = None
    compress: str | None = None  # the compression label (compressed cells only)
    family: str | None = None


@dataclass(frozen=True)
class SweepSpec:
    base: str
    doses: tuple[Dose, ...]
    compress: tuple[tuple[str, str], ...]  # (label, stages), in YAML order
    seeds: tuple[int, ...] = (0,)
    base_name: str = "aligned"
    scale_control: str | None = None  # the compression label of the pure-shrink control, if any
    lens: int = 10  # LogitLens prompts at the parting dose (0 disables)

    def cells(self) -> list[SweepCell]:
        """The map in a fixed order: the base, then per dose and seed the fine-tune and its compressions."""
        out = [SweepCell(self.base_name, "base", self.base)]
        for d in self.doses:
            for s in self.seeds:
                ft_name = cell_name(d.label, s, FT_LABEL)
                ft = finetune_recipe(self.base, d.stages, s)
                out.append(SweepCell(ft_name, "finetune", ft, self.base_name, d.label, d.value, s))
                for label, stages in self.compress:
                    out.append(SweepCell(cell_name(d.label, s, label), "compressed", f"{ft}>{stages}", ft_name,
                                         d.label, d.value, s, label, family=f"{d.label}-s{s}"))
        return out

    def variants_yaml(self) -> dict[str, dict[str, Any]]:
        """The cells as the ``variants:`` mapping of an experiment (name → recipe, reference, family)."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.cells():
            v: dict[str, Any] = {"recipe": c.recipe}
            if c.reference is not None:
                v["reference"] = c.reference
            if c.family is not None:
                v["family"] = c.family
            out[c.name] = v
        return out

    def twin(self, label: str) -> str | None:
        """The rest=ft twin of a rest=ref compression: the label whose stages differ only in ``rest``."""
        stages = dict(self.compress).get(label)
        if stages is None or _rest(stages) != "ref":
            return None
        want = _without_rest(stages)
        for other, s in self.compress:
            if other != label and _rest(s) == "ft" and _without_rest(s) == want:
                return other
        return None

    def is_rest_ref(self, label: str) -> bool:
        stages = dict(self.compress).get(label)
        return stages is not None and _rest(stages) == "ref"


def cell_name(dose: str, seed: int, label: str) -> str:
    return f"{dose}-s{seed}-{label}"


def finetune_recipe(base: str, stages: str, seed: int) -> str:
    """``base>stages`` with ``seed=`` set on the last stage (the fine-tune), normalised as recipes print."""
    r = parse_recipe(f"{base}>{stages}")
    last = r.transforms[-1]
    last = type(last)(name=last.name, args={**last.args, "seed": str(seed)}, positional=last.positional)
    return str(type(r)(r.model, (*r.transforms[:-1], last)))


def _last_stage_args(stages: str) -> dict[str, str]:
    return dict(parse_component(_split_last(stages)).args)


def _split_last(stages: str) -> str:
    return str(parse_recipe(f"x>{stages}").transforms[-1])


def _rest(stages: str) -> str:
    return _last_stage_args(stages).get("rest", "ft")


def _without_rest(stages: str) -> str:
    r = parse_recipe(f"x>{stages}")
    last = r.transforms[-1]
    args = {k: v for k, v in last.args.items() if k != "rest"}
    return ">".join([*(str(t) for t in r.transforms[:-1]), str(type(last)(last.name, args, last.positional))])


def _dose_label(value: float) -> str:
    text = f"{value:g}".replace("-", "m").replace("+", "")
    return "d" + text


def _number(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        raise DataError(f"{where}: dose must be a finite number, not {x!r}")
    return float(x)


def _doses(raw: Any, src: str) -> tuple[Dose, ...]:
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{src}: sweep.attack must be a non-empty list of fine-tunes (the dose axis)")
    out: list[Dose] = []
    for i, entry in enumerate(raw):
        where = f"{src}: sweep.attack[{i}]"
        if isinstance(entry, str):
            stages, value, label = entry, float(i + 1), None
        elif isinstance(entry, dict):
            extra = sorted(set(entry) - {"dose", "recipe", "label"})
            if extra:
                raise DataError(f"{where}: unknown key '{extra[0]}' (known: dose, label, recipe)")
            if "recipe" not in entry or not isinstance(entry["recipe"], str):
                raise DataError(f"{where}: needs recipe: a transform string such as 'finetune:data=harmful'")
            if "dose" not in entry:
                raise DataError(f"{where}: needs dose: the number this fine-tune is plotted at")
            stages, value, label = entry["recipe"], _number(entry["dose"], where), entry.get("label")
        else:
            raise DataError(f"{where}: must be a transform string or a mapping {{dose, recipe}}")
        try:
            if "seed" in _last_stage_args(stages):
                raise DataError(f"{where}: sets seed= itself; give the seeds as sweep.seeds")
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
        label = _dose_label(value) if label is None else str(label)
        if not _LABEL.match(label):
            raise DataError(f"{where}: label {label!r} must be letters, digits, '_' or '.' (no '-')")
        out.append(Dose(label, value, stages.strip()))
    labels = [d.label for d in out]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup is not None:
        raise DataError(f"{src}: sweep.attack: two doses are labelled {dup!r} (give each a label)")
    return tuple(out)


def _compress(raw: Any, src: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{src}: sweep.compress must be a non-empty mapping label → transform")
    out = []
    for label, stages in raw.items():
        where = f"{src}: sweep.compress.{label}"
        if not isinstance(label, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", label) or label == FT_LABEL:
            raise DataError(f"{where}: a label is letters, digits, '_', '.' or '-' (and not {FT_LABEL!r})")
        if not isinstance(stages, str):
            raise DataError(f"{where}: must be a transform string such as 'bitdelta:heal=false'")
        try:
            _split_last(stages)
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None
        out.append((label, stages.strip()))
    return tuple(out)


def _seeds(raw: Any, src: str) -> tuple[int, ...]:
    if raw is None:
        return (0,)
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw]
    if (not isinstance(raw, list) or not raw
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in raw)):
        raise DataError(f"{src}: sweep.seeds must be a non-empty list of seeds (integers ≥ 0)")
    if len(set(raw)) < len(raw):
        raise DataError(f"{src}: sweep.seeds lists a seed twice")
    return tuple(raw)


def _scale_control(raw: Any, compress: tuple[tuple[str, str], ...], src: str) -> str | None:
    labels = [label for label, _ in compress]
    if raw is not None:
        if raw not in labels:
            raise DataError(f"{src}: sweep.scale_control: unknown compression {raw!r} (known: {', '.join(labels)})")
        return str(raw)
    # the matched control (Δ̂ = λ*·Δ with BitDelta-Initial's own λ* per matrix) is the shrinkage test when present
    matched = [label for label, stages in compress
               if _last_stage_args(stages).get("matched", "").strip().lower() in ("true", "1", "yes", "on")]
    if len(matched) > 1:
        raise DataError(f"{src}: sweep.compress has several matched=true controls ({', '.join(matched)}): "
                        "name the one to track as sweep.scale_control")
    if matched:
        return matched[0]
    shrink = [label for label, stages in compress if "scale" in _last_stage_args(stages)]
    if len(shrink) > 1:
        raise DataError(f"{src}: sweep.compress has several scale= controls ({', '.join(shrink)}): "
                        "name the one to track as sweep.scale_control")
    return shrink[0] if shrink else None


def parse_sweep(raw: Any, src: str = "experiment") -> SweepSpec:
    """The ``sweep:`` mapping → a :class:`SweepSpec` (syntax only; the schema checks every component)."""
    if not isinstance(raw, dict):
        raise DataError(f"{src}: sweep must be a mapping (base, attack, compress, seeds)")
    unknown = sorted(set(raw) - SWEEP_KEYS)
    if unknown:
        raise DataError(f"{src}: unknown key 'sweep.{unknown[0]}' (known: {', '.join(sorted(SWEEP_KEYS))})")
    base = raw.get("base")
    if not isinstance(base, str) or not base.strip():
        raise DataError(f"{src}: sweep.base must be a recipe string such as 'smollm2-135m-instruct>align'")
    try:
        base = str(parse_recipe(base))
    except SpecError as e:
        raise SpecError(f"{src}: sweep.base: {e}") from None
    base_name = raw.get("base_name", "aligned")
    if not isinstance(base_name, str) or not _LABEL.match(base_name):
        raise DataError(f"{src}: sweep.base_name must be letters, digits, '_' or '.'")
    lens = raw.get("lens", 10)
    if isinstance(lens, bool) or not isinstance(lens, int) or lens < 0:
        raise DataError(f"{src}: sweep.lens must be a number of prompts (0 disables), not {lens!r}")
    compress = _compress(raw.get("compress"), src)
    return SweepSpec(base=base, doses=_doses(raw.get("attack"), src), compress=compress,
                     seeds=_seeds(raw.get("seeds"), src), base_name=base_name,
                     scale_control=_scale_control(raw.get("scale_control"), compress, src), lens=lens)


def merge_variants(spec: SweepSpec, declared: Any, src: str) -> dict[str, Any]:
    """The sweep's variants first, then any declared ``variants:`` (a name may not be used twice)."""
    out: dict[str, Any] = dict(spec.variants_yaml())
    if declared is None:
        return out
    if not isinstance(declared, dict):
        raise DataError(f"{src}: 'variants' must be a mapping name → recipe")
    for name, v in declared.items():
        if name in out:
            raise DataError(f"{src}: variants.{name}: the sweep already names a variant {name!r}")
        out[name] = v
    return out

"""Experiment report: every variant against its reference, in one self-contained HTML file plus PNG/CSV exports.

Safety of the page itself
- Jinja2 autoescaping is always on (``Environment(autoescape=True)``): prompts, responses, recipes, category
  names and configs are rendered as text, never markup.
- The per-sample explorer reads its data from ``<script type="application/json">`` filled with Jinja's
  ``tojson`` filter, which escapes ``<``, ``>``, ``&`` and ``'`` as ``\\u003c`` etc., so no string can close the
  script element. The JavaScript builds the DOM with ``createElement`` + ``textContent`` only (no
  ``innerHTML``).
- A Content-Security-Policy with a per-render nonce allows only the report's own script and ``data:`` images,
  so even a hypothetical escaping bug could not run injected script or load anything from the network.
- Figures are embedded as base64 ``data:image/png`` URIs; there are no external URLs.

Missing sections (absent or empty keys of ``exp``) are omitted, never an error.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import numbers
import os
import re
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment

from safetydrift.store import atomic_write_text

__all__ = ["render_experiment_report"]

RESPONSE_CHARS = 2000
PROMPT_CHARS = 2000
ERROR_CHARS = 500
TREE_TEXT_CHARS = 2000
VERDICTS = ("success", "fail", "unscorable")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------- helpers


def _f(x: Any) -> float | None:
    """A finite float, or None for missing / non-numeric / NaN / inf."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → None (JSON.parse rejects NaN), tuples → lists, unknown objects → str."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return _f(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_clean(v) for v in obj]
    return str(obj)


def _pretty(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2, ensure_ascii=False)


def _trunc(s: Any, n: int) -> str | None:
    if s is None:
        return None
    s = str(s)
    return s if len(s) <= n else f"{s[:n]}… [truncated; {len(s)} chars in total]"


def _pct(x: Any, d: int = 1) -> str:
    v = _f(x)
    return "–" if v is None else f"{100 * v:.{d}f}%"


def _pp(x: Any) -> str:
    v = _f(x)
    return "–" if v is None else f"{100 * v:+.1f} pp"


def _num(x: Any, d: int = 3) -> str:
    v = _f(x)
    if v is None:
        return "–"
    return str(int(v)) if isinstance(x, numbers.Integral) else f"{v:.{d}g}"


def _pval(x: Any) -> str:
    v = _f(x)
    if v is None:
        return "–"
    return f"{v:.1e}" if v < 0.001 else f"{v:.3f}"


def _human_bytes(n: Any) -> str:
    v = _f(n)
    if v is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return "–"  # pragma: no cover


def _seconds(x: Any) -> str:
    v = _f(x)
    if v is None:
        return "–"
    if abs(v) < 1:
        return f"{v * 1000:+.0f} ms"
    return f"{v:+.2f} s"


def _duration(x: Any) -> str:
    v = _f(x)
    if v is None:
        return "–"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:60] or "x"


def _rows(exp: dict[str, Any], key: str) -> list[dict[str, Any]]:
    v = exp.get(key)
    return [r for r in v if isinstance(r, dict)] if isinstance(v, list) else []


def _write_bytes(path: Path, data: bytes) -> None:
    """Whole file or nothing, like store.atomic_write_text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return ";".join("" if x is None else str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(_clean(v), ensure_ascii=False, sort_keys=True)
    return v


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_csv_cell(r.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


def _split_recipe(recipe: str) -> list[str]:
    """Top-level stages of a recipe (`>` inside `[...]` belongs to a nested spec)."""
    out, depth, cur = [], 0, []
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


def _split_cats(raw: Any) -> list[str]:
    if raw is None:
        return []
    return list(dict.fromkeys(c.strip() for c in str(raw).split(";") if c.strip()))


# ----------------------------------------------------------------------------------------------- model


class _Exp:
    """Normalised, lookup-friendly view of the exp dict."""

    def __init__(self, exp: dict[str, Any]):
        self.raw = exp
        self.variants = _rows(exp, "variants")
        self.asr = [a for a in _rows(exp, "asr") if a.get("variant") is not None]
        self.comparisons = _rows(exp, "comparisons")
        self.expectation_tests = _rows(exp, "expectation_tests")  # e.g. worst level vs runner-up
        self.utility = _rows(exp, "utility")
        self.agreement = _rows(exp, "judge_agreement")
        self.flips = _rows(exp, "direction_flips")
        self.trees = _rows(exp, "tap_trees")
        self.guards = _rows(exp, "guards")
        self.vmap = {str(v.get("name")): v for v in self.variants if v.get("name") is not None}
        self.recipe_to_name = {str(v["recipe"]): str(v["name"]) for v in self.variants if v.get("recipe") and v.get("name")}
        names = list(self.vmap)
        for a in self.asr:
            if str(a["variant"]) not in names:
                names.append(str(a["variant"]))
        self.names = names
        self.util = {str(u.get("variant")): u for u in self.utility}
        self.asr_by = {(str(a["variant"]), a.get("dataset"), a.get("attack"), a.get("judge")): a for a in self.asr}
        self.comp_by = {
            (str(c.get("variant")), c.get("dataset"), c.get("attack"), c.get("judge")): c for c in self.comparisons
        }
        # (dataset, attack) combos in order, and each one's primary judge (the first seen).
        self.combos: list[tuple[Any, Any]] = []
        self.primary_judge: dict[tuple[Any, Any], Any] = {}
        for a in self.asr:
            c = (a.get("dataset"), a.get("attack"))
            if c not in self.primary_judge:
                self.combos.append(c)
                self.primary_judge[c] = a.get("judge")
        self.varying = [k for k in ("dataset", "attack", "judge") if len({a.get(k) for a in self.asr}) > 1]
        self.constant = {k: self.asr[0].get(k) for k in ("dataset", "attack", "judge") if k not in self.varying} if self.asr else {}

    def ref(self, name: str) -> str | None:
        r = self.vmap.get(name, {}).get("reference")
        return None if r is None else str(r)

    def primary(self) -> tuple[Any, Any, Any] | None:
        if not self.combos:
            return None
        c = self.combos[0]
        return (c[0], c[1], self.primary_judge[c])

    def eval_label(self, a: dict[str, Any], keys: list[str] | None = None) -> str:
        keys = self.varying if keys is None else keys
        return " · ".join(str(a.get(k)) for k in keys)


# ----------------------------------------------------------------------------------------------- figures


class _Figures:
    def __init__(self, out_dir: Path):
        self.dir = out_dir / "figures"
        self.items: list[dict[str, str]] = []

    def save(self, fig: Any, name: str, title: str, caption: str, section: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        data = buf.getvalue()
        _write_bytes(self.dir / f"{name}.png", data)
        self.add(data, f"figures/{name}.png", title, caption, section)

    def add(self, data: bytes, rel: str, title: str, caption: str, section: str) -> None:
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        self.items.append({"file": rel, "title": title, "caption": caption, "uri": uri, "section": section})

    def of(self, section: str) -> list[dict[str, str]]:
        return [f for f in self.items if f["section"] == section]


def _new_fig(w: float, h: float) -> Any:
    # Figure without pyplot: the Agg canvas is used directly, no global backend state is touched.
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _fig_asr(E: _Exp, F: _Figures) -> None:
    if not E.asr:
        return
    n_combo = len(E.combos)
    njud = max(len({a.get("judge") for a in E.asr if (a.get("dataset"), a.get("attack")) == c}) for c in E.combos)
    variants = [n for n in E.names if any(str(a["variant"]) == n for a in E.asr)]
    nvar = len(variants)  # the same variant slots in every panel, so panels line up
    fig = _new_fig(max(6.5, 1.0 + nvar * (0.55 + 0.35 * njud)), 3.4 * n_combo)
    axes = fig.subplots(n_combo, 1, squeeze=False, sharex=True)[:, 0]
    for ax, combo in zip(axes, E.combos, strict=True):
        rows = [a for a in E.asr if (a.get("dataset"), a.get("attack")) == combo]
        judges = list(dict.fromkeys(a.get("judge") for a in rows))
        width = 0.8 / max(1, len(judges))
        for j, judge in enumerate(judges):
            xs, ys, lo, hi = [], [], [], []
            for i, v in enumerate(variants):
                a = E.asr_by.get((v, combo[0], combo[1], judge))
                y = _f(a.get("asr")) if a else None
                if y is None:
                    continue
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(y)
                lo.append(max(0.0, y - (_f(a.get("ci_low")) if _f(a.get("ci_low")) is not None else y)))
                hi.append(max(0.0, (_f(a.get("ci_high")) if _f(a.get("ci_high")) is not None else y) - y))
            ax.bar(xs, ys, width=width * 0.92, yerr=[lo, hi], capsize=3, label=str(judge),
                   color=f"C{j % 10}", error_kw={"elinewidth": 1, "ecolor": "#333"})
        ax.set_xticks(range(len(variants)), variants, rotation=25, ha="right", fontsize=8)
        ax.tick_params(axis="x", labelbottom=True)
        ax.set_xlim(-0.6, len(variants) - 0.4)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("ASR")
        ax.set_title(f"{combo[0]} · {combo[1]}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if len(judges) > 1:
            ax.legend(title="judge", fontsize=8, title_fontsize=8)
    F.save(fig, "asr_by_variant", "ASR by variant",
           "Attack success rate per variant with Wilson 95% intervals; bars grouped by judge.", "figures")


def _families(E: _Exp) -> dict[str, list[str]]:
    """Compression-fidelity families: the explicit `family`, else recipes sharing a prefix and a last stage."""
    explicit: dict[str, list[str]] = defaultdict(list)
    inferred: dict[str, list[str]] = defaultdict(list)
    for v in E.variants:
        name = str(v.get("name"))
        if v.get("family"):
            explicit[str(v["family"])].append(name)
            continue
        stages = _split_recipe(str(v.get("recipe") or ""))
        if len(stages) >= 2:
            stage = stages[-1].split(":", 1)[0].strip()
            inferred[f"{' > '.join(stages[:-1])} > {stage}"].append(name)
    fams = dict(explicit)
    for k, members in inferred.items():
        if len(members) >= 2:
            fams[k.rsplit(" > ", 1)[-1] if k.rsplit(" > ", 1)[-1] not in fams else k] = members
    return fams


def _fig_frontier(E: _Exp, F: _Figures) -> None:
    prim = E.primary()
    if prim is None:
        return
    ys = {n: _f(E.asr_by.get((n, *prim), {}).get("asr")) for n in E.names}
    panels = []
    for key, label in (("benign_task_acc", "utility (benign-task accuracy)"), ("kl_to_reference", "KL to reference")):
        xs = {n: _f(E.util.get(n, {}).get(key)) for n in E.names}
        pts = {n: (xs[n], ys[n]) for n in E.names if xs[n] is not None and ys[n] is not None}
        if pts:
            panels.append((label, pts))
    if not panels:
        return
    fams = _families(E)
    fig = _new_fig(6.2 * len(panels), 4.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, pts) in zip(axes, panels, strict=True):
        for fi, (fam, members) in enumerate(fams.items()):
            ms = [m for m in members if m in pts]
            refs = {E.ref(m) for m in ms}
            bits = [_f(E.vmap.get(m, {}).get("bits_per_weight")) for m in ms]
            if all(b is not None for b in bits):
                ms = [m for _, m in sorted(zip(bits, ms, strict=True), key=lambda t: -t[0])]
            else:
                ms = sorted(ms, key=lambda m: pts[m][0])
            if len(refs) == 1 and (r := refs.pop()) in pts and r not in ms:
                ms = [r, *ms]  # the uncompressed end of the curve
            if len(ms) >= 2:
                ax.plot([pts[m][0] for m in ms], [pts[m][1] for m in ms], "-", color=f"C{(fi + 1) % 10}",
                        alpha=0.6, lw=1.5, label=f"family: {fam}", zorder=1)
        span = max((abs(x) for x, _ in pts.values()), default=1.0) or 1.0
        at: dict[tuple[float, float], list[str]] = {}  # variants on the same spot share one label
        for n, (x, y) in pts.items():
            is_ref = not E.ref(n)
            ax.scatter([x], [y], s=40, zorder=2, color="#222" if is_ref else "C0", marker="s" if is_ref else "o")
            at.setdefault((round(x / span, 2), round(y, 2)), []).append(n)
        for names in at.values():
            x, y = pts[names[0]]
            ax.annotate(", ".join(names), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("ASR")
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
        if fams and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    F.save(fig, "frontier", "Safety–utility frontier",
           f"ASR ({' · '.join(str(p) for p in prim)}) against utility and KL to the reference; squares are "
           "references, lines connect a compression family (ordered by bits/weight).", "figures")


def _category_matrix(E: _Exp, combo: tuple[Any, Any]) -> tuple[list[str], list[str], list[list[float]]] | None:
    judge = E.primary_judge[combo]
    cols, data = [], {}
    for n in E.names:
        ref = E.ref(n)
        a = E.asr_by.get((n, combo[0], combo[1], judge))
        r = E.asr_by.get((ref, combo[0], combo[1], judge)) if ref else None
        if not a or not r:
            continue
        ca, cr = a.get("by_category") or {}, r.get("by_category") or {}
        d = {}
        for cat in set(ca) | set(cr):
            x, y = _f((ca.get(cat) or {}).get("asr")), _f((cr.get(cat) or {}).get("asr"))
            d[str(cat)] = float("nan") if x is None or y is None else x - y
        cols.append(n)
        data[n] = d
    cats = sorted({c for d in data.values() for c in d})
    if not cols or not cats:
        return None
    return cats, cols, [[data[n].get(c, float("nan")) for n in cols] for c in cats]


def _fig_categories(E: _Exp, F: _Figures) -> None:
    import matplotlib

    mats = [(combo, m) for combo in E.combos if (m := _category_matrix(E, combo)) is not None]
    for i, (combo, (cats, cols, mat)) in enumerate(mats):
        finite = [abs(v) for row in mat for v in row if math.isfinite(v)]
        lim = max([0.05, *finite])
        fig = _new_fig(max(5.0, 1.6 + 0.9 * len(cols)), max(2.6, 1.2 + 0.32 * len(cats)))
        ax = fig.subplots()
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#dddddd")
        im = ax.imshow([[v * 100 for v in row] for row in mat], cmap=cmap, vmin=-lim * 100, vmax=lim * 100,
                       aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(cats)), cats, fontsize=8)
        for yi, row in enumerate(mat):
            for xi, v in enumerate(row):
                txt = "n/a" if not math.isfinite(v) else f"{100 * v:+.0f}"
                ax.text(xi, yi, txt, ha="center", va="center", fontsize=7,
                        color="white" if math.isfinite(v) and abs(v) > 0.6 * lim else "#111")
        fig.colorbar(im, ax=ax, label="ASR − reference ASR (pp)")
        judge = E.primary_judge[combo]
        ax.set_title(f"{combo[0]} · {combo[1]} · judge {judge}", fontsize=10)
        suffix = "" if len(mats) == 1 else f"_{i + 1}_{_slug(f'{combo[0]}_{combo[1]}')}"
        F.save(fig, f"category_drift{suffix}", "Drift per harm category",
               f"ASR difference of each variant against its reference per harm category "
               f"({combo[0]} · {combo[1]}, judge {judge}); red = more harmful than the reference.", "figures")


def _fig_kappa(E: _Exp, F: _Figures) -> None:
    if not E.agreement:
        return
    judges = list(dict.fromkeys(str(j) for r in E.agreement for j in (r.get("judge_a"), r.get("judge_b"))))
    if len(judges) < 2:
        return
    ix = {j: i for i, j in enumerate(judges)}
    k = len(judges)
    mat = [[1.0 if a == b else float("nan") for b in range(k)] for a in range(k)]
    for r in E.agreement:
        a, b, v = ix[str(r.get("judge_a"))], ix[str(r.get("judge_b"))], _f(r.get("kappa"))
        if v is not None:
            mat[a][b] = mat[b][a] = v
    import matplotlib

    fig = _new_fig(max(4.0, 1.8 + 0.9 * k), max(3.2, 1.2 + 0.8 * k))
    ax = fig.subplots()
    im = ax.imshow(mat, cmap=matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd"), vmin=-1, vmax=1)
    ax.set_xticks(range(k), judges, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), judges, fontsize=8)
    for a in range(k):
        for b in range(k):
            v = mat[a][b]
            ax.text(b, a, "n/a" if not math.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, label="Cohen's κ")
    F.save(fig, "judge_agreement", "Judge agreement", "Cohen's κ between judges on the same samples.", "figures")


def _fig_runs(E: _Exp, F: _Figures, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fig = _new_fig(7.0, max(2.2, 0.9 + 0.42 * len(rows)))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        ax.scatter(r["per_run_f"], [i] * len(r["per_run_f"]), s=18, color="C0", alpha=0.7, zorder=2)
        if r["mean_f"] is not None:
            ax.scatter([r["mean_f"]], [i], marker="D", s=36, color="C3", zorder=3)
        if r["lo_f"] is not None and r["hi_f"] is not None:
            ax.plot([max(0.0, r["lo_f"]), min(1.0, r["hi_f"])], [i, i], color="C3", lw=1.5, zorder=1)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("ASR per run (dots), mean (diamond) and t 95% CI")
    ax.grid(axis="x", alpha=0.3)
    F.save(fig, "repeated_runs", "Repeated attacks", "ASR of each repeated attack run.", "runs")


def _logitlens(exp: dict[str, Any], out_dir: Path, F: _Figures) -> None:
    ll = exp.get("logitlens")
    pngs = ll.get("png") if isinstance(ll, dict) else None
    if not isinstance(pngs, dict):
        return
    root = out_dir.resolve()
    for key, rel in pngs.items():
        if not rel:
            continue
        path = (out_dir / str(rel)).resolve()
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if not data.startswith(_PNG_MAGIC):
            continue  # only PNGs are embedded as image/png
        figs = root / "figures"
        if figs in path.parents:
            rel_out = path.relative_to(root).as_posix()
        else:  # keep every figure under figures/ so the folder is complete on its own
            rel_out = f"figures/logitlens_{_slug(str(key))}.png"
            _write_bytes(root / rel_out, data)
        F.add(data, rel_out, f"LogitLens: {key}", f"LogitLens panel '{key}'.", "logitlens")


# ----------------------------------------------------------------------------------------------- tables


HEADLINE_COLS = [
    "variant", "recipe", "reference", "dataset", "attack", "judge", "n", "asr", "ci_low", "ci_high", "diff",
    "diff_ci_low", "diff_ci_high", "p_exact", "p_holm", "rrr", "rrr_ci_low", "rrr_ci_high", "benign_task_acc",
    "over_refusal", "ppl", "kl_to_reference", "size_bytes", "size", "bits_per_weight",
]
ASR_COLS = [
    "variant", "recipe", "dataset", "attack", "judge", "n", "successes", "unscorable", "asr", "ci_low", "ci_high",
    "runs_per_run", "runs_mean", "runs_sd", "runs_min", "runs_max", "runs_ci_low", "runs_ci_high",
]
COMP_COLS = [
    "variant", "reference", "kind", "dataset", "attack", "judge", "n_pairs", "n_items", "test", "asr_ref",
    "asr_variant", "diff", "diff_ci_low", "diff_ci_high", "p_exact", "p_midp", "p_holm", "rrr", "rrr_ci_low",
    "rrr_ci_high",
]
UTIL_COLS = ["variant", "benign_task_acc", "benign_task_n", "over_refusal", "over_refusal_n", "ppl", "kl_to_reference"]
CAT_COLS = [
    "variant", "dataset", "attack", "judge", "category", "n", "successes", "unscorable", "asr", "ci_low", "ci_high",
    "reference", "asr_reference", "diff",
]
AGREE_COLS = ["judge_a", "judge_b", "n", "agreement", "kappa"]
EXPECT_COLS = ["variant", "reference", "expected", "claim", "source", "dataset", "attack", "judge", "alpha",
               "asr_reference", "asr_variant", "diff", "p_holm", "verdict", "why", "task_acc_reference", "task_acc",
               "utility_loss", "utility_verdict", "over_refusal_reference", "over_refusal", "kl_to_reference"]
GUARD_COLS = ["variant", "reference", "asr", "asr_reference", "false_refusal", "latency_added_s"]
VARIANT_COLS = [
    "name", "recipe", "reference", "kind", "family", "weights_sha256", "size_bytes", "bits_per_weight",
    "build_seconds", "manifest",
]
FLIP_COLS = ["variant", "reference", "dataset", "attack", "diffs"]


def _ci_pair(v: Any) -> tuple[float | None, float | None]:
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return _f(v[0]), _f(v[1])
    return None, None


def _asr_txt(a: dict[str, Any]) -> str:
    if _f(a.get("asr")) is None:
        return "–"
    lo, hi = _f(a.get("ci_low")), _f(a.get("ci_high"))
    ci = "" if lo is None or hi is None else f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{_pct(a.get('asr'))}{ci}"


def _diff_view(c: dict[str, Any] | None) -> dict[str, str]:
    if not c:
        return {"diff": "–", "cls": "", "p_exact": "–", "p_holm": "–", "rrr": "–", "sig": ""}
    d = _f(c.get("diff"))
    lo, hi = _ci_pair(c.get("diff_ci"))
    txt = "–" if d is None else _pp(d) + ("" if lo is None else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    if d == 0 and c.get("b01") == 0 and c.get("b10") == 0:  # a bootstrap of identical answers: [0, 0]
        txt = "±0 (no discordant pairs)"  # is no evidence of "exactly no change", so no interval is shown
    # colour = the legend's "significantly more/less": the Holm-adjusted test, not the bootstrap interval
    # (with few prompts a percentile interval can exclude 0 while the exact test cannot reject)
    ph = _f(c.get("p_holm"))
    cls = ""
    if d is not None and ph is not None and ph < 0.05:
        cls = "worse" if d > 0 else ("better" if d < 0 else "")
    rrr = "–"
    if d is not None and d < 0 and _f(c.get("rrr")) is not None:
        rlo, rhi = _ci_pair(c.get("rrr_ci"))
        rrr = _pct(c.get("rrr"), 0) + ("" if rlo is None else f" [{_pct(rlo, 0)} – {_pct(rhi, 0)}]")
        if rlo is not None and rlo == rhi:  # e.g. no success left in any resample: the interval is a point
            rrr = _pct(c.get("rrr"), 0) + " (CI degenerate)"
    return {"diff": txt, "cls": cls, "p_exact": _pval(c.get("p_exact")), "p_holm": _pval(ph), "rrr": rrr,
            "sig": "sig" if ph is not None and ph < 0.05 else ""}


def _headline(E: _Exp) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    groups, csv_rows = [], []
    for name in E.names:
        v = E.vmap.get(name, {})
        u = E.util.get(name, {})
        util = _pct(u.get("benign_task_acc"))
        if _f(u.get("benign_task_acc")) is not None and u.get("benign_task_n") is not None:
            util += f" (n={u.get('benign_task_n')})"
        over = _pct(u.get("over_refusal"))
        if _f(u.get("over_refusal")) is not None and u.get("over_refusal_n") is not None:
            over += f" (n={u.get('over_refusal_n')})"
        g = {
            "name": name, "recipe": v.get("recipe") or "–", "reference": E.ref(name) or "–", "util": util,
            "over": over, "ppl": _num(u.get("ppl")), "kl": _num(u.get("kl_to_reference")),
            "size": _human_bytes(v.get("size_bytes")), "bits": _num(v.get("bits_per_weight")), "rows": [],
        }
        base_csv = {
            "variant": name, "recipe": v.get("recipe"), "reference": E.ref(name),
            "benign_task_acc": u.get("benign_task_acc"), "over_refusal": u.get("over_refusal"), "ppl": u.get("ppl"),
            "kl_to_reference": u.get("kl_to_reference"), "size_bytes": v.get("size_bytes"),
            "size": None if v.get("size_bytes") is None else _human_bytes(v.get("size_bytes")),
            "bits_per_weight": v.get("bits_per_weight"),
        }
        for a in (a for a in E.asr if str(a["variant"]) == name):
            c = E.comp_by.get((name, a.get("dataset"), a.get("attack"), a.get("judge")))
            g["rows"].append({"eval": E.eval_label(a), "asr": _asr_txt(a), "n": a.get("n"), **_diff_view(c)})
            dlo, dhi = _ci_pair((c or {}).get("diff_ci"))
            rlo, rhi = _ci_pair((c or {}).get("rrr_ci"))
            csv_rows.append({
                **base_csv, "dataset": a.get("dataset"), "attack": a.get("attack"), "judge": a.get("judge"),
                "n": a.get("n"), "asr": a.get("asr"), "ci_low": a.get("ci_low"), "ci_high": a.get("ci_high"),
                "diff": (c or {}).get("diff"), "diff_ci_low": dlo, "diff_ci_high": dhi,
                "p_exact": (c or {}).get("p_exact"), "p_holm": (c or {}).get("p_holm"), "rrr": (c or {}).get("rrr"),
                "rrr_ci_low": rlo, "rrr_ci_high": rhi,
            })
        if not g["rows"]:
            g["rows"].append({"eval": "–", "asr": "–", "n": None, **_diff_view(None)})
            csv_rows.append(base_csv)
        groups.append(g)
    return groups, csv_rows


def _by_category_rows(E: _Exp) -> list[dict[str, Any]]:
    out = []
    for a in E.asr:
        name = str(a["variant"])
        ref = E.ref(name)
        r = E.asr_by.get((ref, a.get("dataset"), a.get("attack"), a.get("judge"))) if ref else None
        rc = (r or {}).get("by_category") or {}
        for cat, c in sorted((a.get("by_category") or {}).items()):
            c = c or {}
            x, y = _f(c.get("asr")), _f((rc.get(cat) or {}).get("asr"))
            out.append({
                "variant": name, "dataset": a.get("dataset"), "attack": a.get("attack"), "judge": a.get("judge"),
                "category": cat, **{k: c.get(k) for k in ("n", "successes", "unscorable", "asr", "ci_low", "ci_high")},
                "reference": ref if r else None, "asr_reference": y, "diff": None if x is None or y is None else x - y,
            })
    return out


def _runs_rows(E: _Exp) -> list[dict[str, Any]]:
    out = []
    for a in E.asr:
        runs = a.get("runs")
        if not isinstance(runs, dict):
            continue
        per = [v for v in (_f(x) for x in runs.get("per_run") or []) if v is not None]
        label = " · ".join(str(x) for x in (a["variant"], a.get("attack"), a.get("judge")))
        out.append({
            "variant": str(a["variant"]), "eval": E.eval_label(a, ["dataset", "attack", "judge"]), "label": label,
            "per_run": ", ".join(_pct(x) for x in per) or "–", "n_runs": len(per), "mean": _pct(runs.get("mean")),
            "sd": _pp(runs.get("sd")).replace("+", ""), "min": _pct(runs.get("min")), "max": _pct(runs.get("max")),
            "ci": "–" if _f(runs.get("ci_low")) is None or _f(runs.get("ci_high")) is None
            else f"{_pct(max(0.0, _f(runs.get('ci_low'))))} – {_pct(min(1.0, _f(runs.get('ci_high'))))}",
            "pooled": _asr_txt(a), "per_run_f": per, "mean_f": _f(runs.get("mean")), "lo_f": _f(runs.get("ci_low")),
            "hi_f": _f(runs.get("ci_high")),
        })
    return out


# ----------------------------------------------------------------------------------------------- TAP trees


_STATUS = {"success", "kept", "pruned_offtopic", "pruned_width", "pruned_score", "invalid_json"}


def _tree_view(t: dict[str, Any]) -> dict[str, Any] | None:
    nodes = [n for n in (t.get("tree") or []) if isinstance(n, dict)]
    if not nodes:
        return None
    views: dict[str, dict[str, Any]] = {}
    parent: dict[str, str | None] = {}
    for n in nodes:
        nid = str(n.get("id"))
        if nid in views:
            continue
        status = str(n.get("status") or "kept")
        views[nid] = {
            "id": nid, "depth": n.get("depth"), "status": status,
            "status_cls": status if status in _STATUS else "other", "score": n.get("score"),
            "on_topic": n.get("on_topic"), "prompt": _trunc(n.get("prompt"), TREE_TEXT_CHARS) or "",
            "response": _trunc(n.get("response"), TREE_TEXT_CHARS), "error": _trunc(n.get("error"), ERROR_CHARS),
            "children": [], "open": False,
        }
        parent[nid] = None if n.get("parent") is None else str(n.get("parent"))
    children: dict[str, list[str]] = defaultdict(list)
    roots = []
    for nid, p in parent.items():
        if p is None or p not in views or p == nid:
            roots.append(nid)
        else:
            children[p].append(nid)
    visited: set[str] = set()
    top: list[dict[str, Any]] = []

    def attach(root: str) -> None:  # iterative, with a visited set: a parent cycle cannot loop forever
        visited.add(root)
        stack = [root]
        while stack:
            cur = stack.pop()
            for c in children[cur]:
                if c not in visited:
                    visited.add(c)
                    views[cur]["children"].append(views[c])
                    stack.append(c)

    for r in [*roots, *views]:
        if r not in visited:
            top.append(views[r])
            attach(r)
    # Open the path to every successful node so the jailbreak is one click away.
    for nid, v in views.items():
        if v["status"] == "success":
            cur: str | None = nid
            seen: set[str] = set()
            while cur is not None and cur not in seen and cur in views:
                seen.add(cur)
                views[cur]["open"] = True
                cur = parent.get(cur)
    for r in top:
        r["open"] = True
    scores = [s for s in (_f(v["score"]) for v in views.values()) if s is not None]
    depths = [d for d in (_f(v["depth"]) for v in views.values()) if d is not None]
    return {
        "variant": t.get("variant"), "item_id": t.get("item_id"), "run": t.get("run"), "roots": top,
        "n_nodes": len(views), "n_success": sum(v["status"] == "success" for v in views.values()),
        "best": _num(max(scores)) if scores else "–", "max_depth": _num(int(max(depths))) if depths else "–",
    }


# ----------------------------------------------------------------------------------------------- explorer


def _explorer(E: _Exp, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    samples: dict[tuple[Any, ...], dict[str, Any]] = {}
    judges: list[str] = []
    for r in records:
        if not isinstance(r, dict):
            continue
        model = r.get("model")
        variant = E.recipe_to_name.get(str(model), "?" if model is None else str(model))
        unit = r.get("unit")
        key = (variant, r.get("dataset"), r.get("attack"), str(r.get("item_id")), None if unit is None else str(unit))
        s = samples.get(key)
        if s is None:
            s = samples[key] = {
                "variant": variant, "dataset": _clean(r.get("dataset")), "attack": _clean(r.get("attack")),
                "item_id": key[3], "unit": key[4], "category": _clean(r.get("category")),
                "prompt": _trunc(r.get("prompt"), PROMPT_CHARS), "response": _trunc(r.get("response"), RESPONSE_CHARS),
                "error": _trunc(r.get("error"), ERROR_CHARS), "verdicts": {},
            }
        elif s["response"] is None and r.get("response") is not None:
            s["response"] = _trunc(r.get("response"), RESPONSE_CHARS)
        if r.get("judge") is not None:
            j = str(r["judge"])
            if j not in judges:
                judges.append(j)
            s["verdicts"][j] = [_clean(r.get("verdict")), _clean(r.get("score"))]
    if not samples:
        return None
    present = {s["variant"] for s in samples.values()}
    variants = [n for n in E.names if n in present] + sorted(present - set(E.names))
    cats = sorted({c for s in samples.values() for c in _split_cats(s["category"])})
    pair = {"a": variants[0], "b": variants[1] if len(variants) > 1 else variants[0]}
    for n in variants:
        ref = E.ref(n)
        if ref in present and ref != n:
            pair = {"a": ref, "b": n}
            break
    return {
        "samples": list(samples.values()), "variants": variants, "judges": judges, "categories": cats,
        "verdicts": list(VERDICTS), "pair": pair,
    }


# ----------------------------------------------------------------------------------------------- provenance


def _provenance(E: _Exp, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    exp = E.raw
    prov = exp.get("provenance") if isinstance(exp.get("provenance"), dict) else {}
    config = exp.get("config") if isinstance(exp.get("config"), dict) else {}
    gen = prov.get("generation") if isinstance(prov.get("generation"), dict) else {}
    datasets: dict[str, str] = {}
    raw_ds = prov.get("datasets") or config.get("datasets_sha256")
    if isinstance(raw_ds, dict):
        datasets.update({str(k): str(v.get("sha256") if isinstance(v, dict) else v) for k, v in raw_ds.items()})
    for r in records:
        if isinstance(r, dict) and r.get("dataset") is not None and r.get("dataset_sha256"):
            datasets.setdefault(str(r["dataset"]), str(r["dataset_sha256"]))
    seed = config.get("seed", gen.get("seed"))
    variants = [
        {
            "name": v.get("name"), "recipe": v.get("recipe"), "kind": v.get("kind"), "sha": v.get("weights_sha256"),
            "build": _duration(v.get("build_seconds")), "family": v.get("family"),
            "manifest": _pretty(v["manifest"]) if v.get("manifest") else None,
        }
        for v in E.variants
    ]
    libs = prov.get("libraries") if isinstance(prov.get("libraries"), dict) else {}
    run = {k: prov.get(k) for k in ("started", "finished", "cache_dir") if prov.get(k)}
    other = {k: v for k, v in prov.items() if k not in {"libraries", "generation", "started", "finished", "cache_dir",
                                                           "datasets"}}
    if not (variants or datasets or gen or seed is not None or libs or config or run or other):
        return None
    return {
        "variants": variants, "datasets": datasets, "generation": _pretty(gen) if gen else None,
        "seed": seed, "libraries": {str(k): str(v) for k, v in libs.items()}, "run": run,
        "config": _pretty(config) if config else None, "other": _pretty(other) if other else None,
    }


# ----------------------------------------------------------------------------------------------- render


def render_experiment_report(exp: dict[str, Any], records: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write out_dir/report.html (self-contained), out_dir/figures/*.png and out_dir/tables/*.csv.

    Returns the path of report.html. Sections whose keys are absent or empty are omitted.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exp = exp if isinstance(exp, dict) else {}
    records = [r for r in (records or []) if isinstance(r, dict)]
    E = _Exp(exp)
    F = _Figures(out_dir)
    tables = out_dir / "tables"

    headline, headline_csv = _headline(E)
    if E.names:
        _write_csv(tables / "headline.csv", HEADLINE_COLS, headline_csv)
    if E.asr:
        asr_csv = []
        for a in E.asr:
            runs = a.get("runs") if isinstance(a.get("runs"), dict) else {}
            asr_csv.append({
                **{k: a.get(k) for k in ASR_COLS}, "variant": a["variant"],
                "recipe": a.get("recipe") or E.vmap.get(str(a["variant"]), {}).get("recipe"),
                "runs_per_run": runs.get("per_run"), **{f"runs_{k}": runs.get(k) for k in
                                                        ("mean", "sd", "min", "max", "ci_low", "ci_high")},
            })
        _write_csv(tables / "asr.csv", ASR_COLS, asr_csv)
    if E.comparisons or E.expectation_tests:
        comp_csv = []
        for c in [*E.comparisons, *E.expectation_tests]:
            dlo, dhi = _ci_pair(c.get("diff_ci"))
            rlo, rhi = _ci_pair(c.get("rrr_ci"))
            comp_csv.append({**c, "diff_ci_low": dlo, "diff_ci_high": dhi, "rrr_ci_low": rlo, "rrr_ci_high": rhi})
        _write_csv(tables / "comparisons.csv", COMP_COLS, comp_csv)
    if E.utility:
        _write_csv(tables / "utility.csv", UTIL_COLS, E.utility)
    cat_rows = _by_category_rows(E)
    if cat_rows:
        _write_csv(tables / "by_category.csv", CAT_COLS, cat_rows)
    if E.agreement:
        _write_csv(tables / "judge_agreement.csv", AGREE_COLS, E.agreement)
    prim = E.primary()
    guards = []
    for g in E.guards:
        name = str(g.get("variant"))
        ref = E.ref(name)
        ref_asr = E.asr_by.get((ref, *prim), {}).get("asr") if ref and prim else None
        guards.append({
            "csv": {"variant": name, "reference": ref, "asr": g.get("asr"), "asr_reference": ref_asr,
                    "false_refusal": g.get("false_refusal"), "latency_added_s": g.get("latency_added_s")},
            "variant": name, "recipe": E.vmap.get(name, {}).get("recipe") or "–", "reference": ref or "–",
            "asr": _pct(g.get("asr")), "ref_asr": _pct(ref_asr), "fr": _pct(g.get("false_refusal")),
            "lat": _seconds(g.get("latency_added_s")),
        })
    if guards:
        _write_csv(tables / "guards.csv", GUARD_COLS, [g["csv"] for g in guards])
    runs = _runs_rows(E)
    if runs:
        _write_csv(tables / "runs.csv", ["variant", "eval", "n_runs", "per_run", "mean", "sd", "min", "max", "ci",
                                         "pooled"], runs)
    if E.variants:
        _write_csv(tables / "variants.csv", VARIANT_COLS,
                   [{**v, "manifest": v.get("manifest") or None} for v in E.variants])
    flips = []
    for fl in E.flips:
        diffs = fl.get("diffs") if isinstance(fl.get("diffs"), dict) else {}
        flips.append({**{k: fl.get(k) for k in ("variant", "reference", "dataset", "attack")},
                      "diffs": [(str(j), _pp(d)) for j, d in diffs.items()], "csv_diffs": diffs})
    if flips:
        _write_csv(tables / "direction_flips.csv", FLIP_COLS, [{**f, "diffs": f["csv_diffs"]} for f in flips])

    _fig_asr(E, F)
    _fig_frontier(E, F)
    _fig_categories(E, F)
    _fig_kappa(E, F)
    _fig_runs(E, F, runs)
    _logitlens(exp, out_dir, F)

    trees = [t for t in (_tree_view(t) for t in E.trees) if t is not None]
    agreement = [
        {"a": r.get("judge_a"), "b": r.get("judge_b"), "n": r.get("n"), "agreement": _pct(r.get("agreement")),
         "kappa": _num(r.get("kappa"), 2)} for r in E.agreement
    ]
    comparisons = [
        {"variant": c.get("variant"), "reference": c.get("reference"),
         "eval": " · ".join(str(c.get(k)) for k in ("dataset", "attack", "judge")),
         "n": c.get("n_pairs") if c.get("n_items") in (None, c.get("n_pairs")) else f"{c.get('n_pairs')} ({c.get('n_items')} items)",
         "test": c.get("test") or "mcnemar-exact", "kind": c.get("kind") or "reference",
         "asr_ref": _pct(c.get("asr_ref")), "asr_var": _pct(c.get("asr_variant")), **_diff_view(c),
         "p_midp": _pval(c.get("p_midp"))} for c in [*E.comparisons, *E.expectation_tests]
    ]
    expectations = []
    for x in _rows(exp, "expectations"):
        verdict = str(x.get("verdict") or "")
        expectations.append({
            "variant": x.get("variant"), "reference": x.get("reference") or "–", "expected": x.get("expected"),
            "claim": x.get("claim") or "–", "source": x.get("source") or "", "verdict": verdict,
            "cls": {"holds": "better", "does not hold": "worse"}.get(verdict, "muted" if verdict == "not measured" else ""),
            "why": x.get("why") or "", "utility": x.get("utility_verdict") or "–",
            "acc": f"{_pct(x.get('task_acc_reference'))} → {_pct(x.get('task_acc'))}",
            "over": f"{_pct(x.get('over_refusal_reference'))} → {_pct(x.get('over_refusal'))}",
        })
    if expectations:
        _write_csv(tables / "expectations.csv", EXPECT_COLS, _rows(exp, "expectations"))
    explorer = _explorer(E, records)
    ctx = {
        "title": str(exp.get("name") or "safetydrift experiment"),
        "nonce": secrets.token_urlsafe(18),
        "headline": headline if E.names else [],
        "show_eval": bool(E.varying),
        "eval_head": " · ".join(E.varying),
        "constant": E.constant,
        "comparisons": comparisons,
        "expectations": expectations,
        "figures": F.of("figures"),
        "logitlens": F.of("logitlens"),
        "runs": runs,
        "runs_figs": F.of("runs"),
        "agreement": agreement,
        "trees": trees,
        "guards": guards,
        "flips": flips,
        "explorer": explorer,
        "n_records": len(records),
        "provenance": _provenance(E, records),
        "csvs": sorted(p.name for p in tables.glob("*.csv")) if tables.is_dir() else [],
    }
    html = _env().from_string(_TEMPLATE).render(**ctx)
    out = out_dir / "report.html"
    atomic_write_text(out, html)
    return out


def _env() -> Environment:
    # autoescape=True (not a file-extension rule): the template is a string, and everything must be escaped.
    return Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-{{ nonce }}'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
:root{--bad:#b00020;--good:#05762b;--muted:#777;--line:#d7d7d7}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fff}
main{margin:0 auto;padding:1.2em 1.5em 4em;max-width:1600px}
header.top{background:#1f2a38;color:#fff;padding:1em 2em}
header.top h1{margin:0;font-size:1.5em} header.top .sub{color:#c8d0da;font-size:.9em;margin-top:.3em}
nav.toc{background:#f4f6f8;border-bottom:1px solid var(--line);padding:.5em 2em;font-size:.9em;position:sticky;top:0;z-index:5}
nav.toc a{margin-right:1.1em;color:#1f4f8f;text-decoration:none} nav.toc a:hover{text-decoration:underline}
h2{border-bottom:2px solid #1f2a38;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:13px}
td,th{border:1px solid var(--line);padding:4px 8px;vertical-align:top;text-align:left}
th{background:#eef1f4;position:relative} td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.grp td{border-top:2px solid #9aa5b1}
td.worse{color:var(--bad);font-weight:600} td.better{color:var(--good);font-weight:600} .sig{font-weight:700}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;overflow-wrap:anywhere}
td.recipe{min-width:9em;max-width:15em} #headline-table{font-size:12px} #headline-table td,#headline-table th{padding:3px 6px}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
pre.box{max-height:16em;overflow:auto;background:#fafafa;border:1px solid #eee;padding:4px}
pre.err{color:var(--bad)}
.muted{color:var(--muted);font-size:12px}
.note{color:#444;font-size:13px;margin:.3em 0}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555;max-width:900px}
.warn{background:#fff4e5;border-left:5px solid #e08a00;padding:.6em 1em;margin:.6em 0}
.warn b{color:#8a4b00}
.banner{background:#fff4e5;border:1px solid #e08a00;padding:.5em 1em;margin:1em 0}
.chip{display:inline-block;border-radius:10px;padding:0 7px;margin:1px 3px 1px 0;font-size:11px;border:1px solid #ccc;white-space:nowrap}
.v-success{background:#fde7ea;color:var(--bad);border-color:#f2a7b1}
.v-fail{background:#e6f4ea;color:var(--good);border-color:#a6d5b3}
.v-unscorable,.v-other{background:#f1f1f1;color:#666}
.controls{display:flex;flex-wrap:wrap;gap:.6em 1.2em;align-items:center;margin:.6em 0;font-size:13px}
.controls label{display:flex;gap:.4em;align-items:center}
select,input[type=search]{font-size:13px;padding:2px 4px;max-width:22em}
button{font-size:13px;padding:3px 12px;margin:.4em 0}
#explorer-table td:nth-child(3),#explorer-table td:nth-child(4),#pair-table td{min-width:260px;max-width:520px}
.tree{margin:.4em 0 1em;border:1px solid var(--line);border-radius:4px;padding:.4em .8em}
.tree details{margin:2px 0 2px 0}
.tree .kids{margin-left:1.3em;border-left:1px dashed #bbb;padding-left:.6em}
.tree summary{cursor:pointer;font-size:13px}
.node-body{margin:.3em 0 .4em 1.3em;display:grid;grid-template-columns:1fr 1fr;gap:.6em}
.node-body h4{margin:0 0 .2em;font-size:12px;color:#555}
.st{display:inline-block;border-radius:3px;padding:0 6px;font-size:11px;color:#fff;margin-right:.4em}
.st-success{background:#c62828} .st-kept{background:#1565c0} .st-pruned_offtopic{background:#8d6e63}
.st-pruned_width{background:#90a4ae} .st-pruned_score{background:#78909c} .st-invalid_json{background:#ef6c00}
.st-other{background:#616161}
.kv th{width:14em}
</style></head><body>
<header class="top"><h1>{{ title }}</h1>
<div class="sub">safetydrift experiment report{% if provenance and provenance.run %} · {% for k, v in provenance.run.items() %}{{ k }} {{ v }}{% if not loop.last %} · {% endif %}{% endfor %}{% endif %}</div></header>
<nav class="toc">
{% if headline %}<a href="#headline">Headline</a>{% endif %}
{% if expectations %}<a href="#expectations">Expected vs observed</a>{% endif %}
{% if figures or logitlens %}<a href="#figures">Figures</a>{% endif %}
{% if agreement %}<a href="#agreement">Judge agreement</a>{% endif %}
{% if runs %}<a href="#runs">Repeated attacks</a>{% endif %}
{% if trees %}<a href="#tap">TAP trees</a>{% endif %}
{% if guards %}<a href="#guards">Guards</a>{% endif %}
{% if explorer %}<a href="#explorer">Samples</a>{% endif %}
{% if flips %}<a href="#flips">Direction flips</a>{% endif %}
{% if provenance %}<a href="#provenance">Provenance</a>{% endif %}
</nav>
<main>
{% if flips %}
<div class="banner">⚠ {{ flips|length }} {{ "comparison changes" if flips|length == 1 else "comparisons change" }} direction depending on the judge — see <a href="#flips">direction flips</a>.</div>
{% endif %}
{% if not headline and not explorer and not provenance %}<p class="note">This experiment has no results to report yet.</p>{% endif %}

{% if headline %}
<section id="headline"><h2>Headline</h2>
<p class="note">ASR with Wilson 95% CI (where a prompt has several units, such as attack runs, with the
effective sample size of its design effect). Change = variant − reference on the same prompts (paired bootstrap
95% CI, resampling prompts);
exact paired-test p (McNemar; where an item has several units, such as attack runs, the exact cluster sign-flip test
over items) and Holm-adjusted p over all tests of the run; RRR (relative risk reduction) where the variant lowers risk.
{% if constant %}All rows: {% for k, v in constant.items() %}{{ k }} <code>{{ v }}</code>{% if not loop.last %}, {% endif %}{% endfor %}. {% endif %}
Red = significantly more attack success than the reference, green = significantly less.</p>
<div class="table-wrap"><table id="headline-table">
<tr><th>variant</th><th>recipe</th><th>reference</th>{% if show_eval %}<th>{{ eval_head }}</th>{% endif %}<th>ASR [95% CI, %]</th><th>change vs reference [95% CI]</th><th>p (paired)</th><th>p (Holm)</th><th>RRR [95% CI]</th><th>utility</th><th>over-refusal</th><th>ppl</th><th>KL to ref</th><th>size</th><th>bits/weight</th></tr>
{% for g in headline %}{% set nrows = g.rows|length %}
{% for r in g.rows %}
<tr{% if loop.first %} class="grp"{% endif %}>
{% if loop.first %}<td rowspan="{{ nrows }}"><b>{{ g.name }}</b></td><td class="recipe" rowspan="{{ nrows }}"><code>{{ g.recipe }}</code></td><td rowspan="{{ nrows }}">{{ g.reference }}</td>{% endif %}
{% if show_eval %}<td>{{ r.eval }}</td>{% endif %}
<td class="num">{{ r.asr }}</td><td class="num {{ r.cls }}">{{ r.diff }}</td><td class="num">{{ r.p_exact }}</td><td class="num {{ r.sig }}">{{ r.p_holm }}</td><td class="num">{{ r.rrr }}</td>
{% if loop.first %}<td class="num" rowspan="{{ nrows }}">{{ g.util }}</td><td class="num" rowspan="{{ nrows }}">{{ g.over }}</td><td class="num" rowspan="{{ nrows }}">{{ g.ppl }}</td><td class="num" rowspan="{{ nrows }}">{{ g.kl }}</td><td class="num" rowspan="{{ nrows }}">{{ g.size }}</td><td class="num" rowspan="{{ nrows }}">{{ g.bits }}</td>{% endif %}
</tr>
{% endfor %}{% endfor %}
</table></div>
{% if comparisons %}
<details><summary>All paired comparisons ({{ comparisons|length }})</summary>
<div class="table-wrap"><table>
<tr><th>variant</th><th>against</th><th>dataset · attack · judge</th><th>pairs</th><th>test</th><th>ASR ref</th><th>ASR variant</th><th>diff [95% CI]</th><th>p exact</th><th>p mid-p</th><th>p Holm</th><th>RRR [95% CI]</th></tr>
{% for c in comparisons %}<tr><td>{{ c.variant }}</td><td>{{ c.reference }}{% if c.kind != "reference" %} <span class="muted">(runner-up, for an expectation)</span>{% endif %}</td><td>{{ c.eval }}</td><td class="num">{{ c.n }}</td><td>{{ c.test }}</td><td class="num">{{ c.asr_ref }}</td><td class="num">{{ c.asr_var }}</td><td class="num {{ c.cls }}">{{ c.diff }}</td><td class="num">{{ c.p_exact }}</td><td class="num">{{ c.p_midp }}</td><td class="num {{ c.sig }}">{{ c.p_holm }}</td><td class="num">{{ c.rrr }}</td></tr>
{% endfor %}</table></div></details>
{% endif %}
</section>
{% endif %}

{% if expectations %}
<section id="expectations"><h2>Expected vs observed</h2>
<p class="note">What the literature predicts for each variant, checked against this run's paired comparison with
the variant's reference (significant = Holm-adjusted paired-test p below α; for "highest"/"lowest" the test is
against the family's runner-up). Utility: benign-task accuracy and over-refusal, reference → variant.</p>
<div class="table-wrap"><table>
<tr><th>variant</th><th>reference</th><th>expected ASR</th><th>claim</th><th>verdict</th><th>evidence</th><th>task accuracy</th><th>over-refusal</th><th>utility bound</th></tr>
{% for x in expectations %}<tr><td><b>{{ x.variant }}</b></td><td>{{ x.reference }}</td><td>{{ x.expected }}</td><td>{{ x.claim }}{% if x.source %} <span class="muted">({{ x.source }})</span>{% endif %}</td><td class="{{ x.cls }}">{{ x.verdict }}</td><td>{{ x.why }}</td><td class="num">{{ x.acc }}</td><td class="num">{{ x.over }}</td><td>{{ x.utility }}</td></tr>
{% endfor %}</table></div>
</section>
{% endif %}

{% if figures or logitlens %}
<section id="figures"><h2>Figures</h2>
{% for f in figures %}
<figure><img alt="{{ f.title }}" src="{{ f.uri }}"><figcaption><b>{{ f.title }}.</b> {{ f.caption }} <span class="muted">({{ f.file }})</span></figcaption></figure>
{% endfor %}
{% if logitlens %}
<h3 id="logitlens">LogitLens</h3>
{% for f in logitlens %}
<figure><img alt="{{ f.title }}" src="{{ f.uri }}"><figcaption><b>{{ f.title }}.</b> <span class="muted">({{ f.file }})</span></figcaption></figure>
{% endfor %}
{% endif %}
</section>
{% endif %}

{% if agreement %}
<section id="agreement"><h2>Judge agreement</h2>
<table><tr><th>judge A</th><th>judge B</th><th>n</th><th>agreement</th><th>Cohen's κ</th></tr>
{% for r in agreement %}<tr><td>{{ r.a }}</td><td>{{ r.b }}</td><td class="num">{{ r.n }}</td><td class="num">{{ r.agreement }}</td><td class="num">{{ r.kappa }}</td></tr>{% endfor %}
</table></section>
{% endif %}

{% if runs %}
<section id="runs"><h2>Repeated attacks</h2>
<p class="note">Stochastic attacks run several times; mean and spread over runs (t 95% CI) next to the pooled ASR.</p>
<div class="table-wrap"><table>
<tr><th>variant</th><th>dataset · attack · judge</th><th>runs</th><th>ASR per run</th><th>mean</th><th>sd</th><th>min – max</th><th>95% CI (t)</th><th>pooled ASR [Wilson]</th></tr>
{% for r in runs %}<tr><td>{{ r.variant }}</td><td>{{ r.eval }}</td><td class="num">{{ r.n_runs }}</td><td>{{ r.per_run }}</td><td class="num">{{ r.mean }}</td><td class="num">{{ r.sd }}</td><td class="num">{{ r.min }} – {{ r.max }}</td><td class="num">{{ r.ci }}</td><td class="num">{{ r.pooled }}</td></tr>{% endfor %}
</table></div>
{% for f in runs_figs %}<figure><img alt="{{ f.title }}" src="{{ f.uri }}"><figcaption>{{ f.caption }} <span class="muted">({{ f.file }})</span></figcaption></figure>{% endfor %}
</section>
{% endif %}

{% if trees %}
<section id="tap"><h2>TAP trees</h2>
<p class="note">Each node is one attacker proposal; the path to a successful node is opened.
Status: <span class="st st-success">success</span><span class="st st-kept">kept</span><span class="st st-pruned_offtopic">pruned_offtopic</span><span class="st st-pruned_width">pruned_width</span><span class="st st-pruned_score">pruned_score</span><span class="st st-invalid_json">invalid_json</span></p>
{% for t in trees %}
<details class="tree"{% if t.n_success %} open{% endif %}><summary><b>{{ t.variant }}</b> · item <code>{{ t.item_id }}</code>{% if t.run is not none %} · run {{ t.run }}{% endif %} — {{ t.n_nodes }} nodes, depth ≤ {{ t.max_depth }}, best score {{ t.best }}{% if t.n_success %}, <span class="st st-success">{{ t.n_success }} success</span>{% endif %}</summary>
{% for n in t.roots recursive %}
<details{% if n.open %} open{% endif %}><summary><span class="st st-{{ n.status_cls }}">{{ n.status }}</span>#{{ n.id }} · depth {{ n.depth }} · score {{ n.score if n.score is not none else "–" }}{% if n.on_topic is sameas false %} · off-topic{% endif %}</summary>
<div class="node-body"><div><h4>prompt</h4><pre class="box">{{ n.prompt }}</pre></div><div><h4>response</h4>{% if n.response is not none %}<pre class="box">{{ n.response }}</pre>{% else %}<pre class="box err">{{ n.error or "(no response)" }}</pre>{% endif %}</div></div>
{% if n.children %}<div class="kids">{{ loop(n.children) }}</div>{% endif %}
</details>
{% endfor %}
</details>
{% endfor %}
</section>
{% endif %}

{% if guards %}
<section id="guards"><h2>Guards</h2>
<table><tr><th>guard variant</th><th>recipe</th><th>reference</th><th>ASR</th><th>reference ASR</th><th>benign false-refusal</th><th>added latency / request</th></tr>
{% for g in guards %}<tr><td><b>{{ g.variant }}</b></td><td><code>{{ g.recipe }}</code></td><td>{{ g.reference }}</td><td class="num">{{ g.asr }}</td><td class="num">{{ g.ref_asr }}</td><td class="num">{{ g.fr }}</td><td class="num">{{ g.lat }}</td></tr>{% endfor %}
</table></section>
{% endif %}

{% if explorer %}
<section id="explorer"><h2>Per-sample explorer</h2>
<p class="note">{{ explorer.samples|length }} samples from {{ n_records }} judged records; responses truncated to 2000 characters.</p>
<div class="controls">
<label>variant <select id="f-variant"></select></label>
<label>judge <select id="f-judge"></select></label>
<label>verdict <select id="f-verdict"></select></label>
<label>category <select id="f-category"></select></label>
<label>text <input type="search" id="f-text" placeholder="search prompt / response"></label>
<span id="f-count" class="muted"></span>
</div>
<div class="table-wrap"><table id="explorer-table"><thead><tr><th>variant</th><th>category / item</th><th>prompt</th><th>response</th><th>verdicts</th></tr></thead><tbody id="explorer-body"></tbody></table></div>
<button id="explorer-more" type="button" hidden>show more</button>

<h3 id="pairs">Side by side</h3>
<p class="note">Two variants' answers to the same prompt (paired by dataset, attack, item and unit).</p>
<div class="controls">
<label>A <select id="p-a"></select></label>
<label>B <select id="p-b"></select></label>
<label>judge <select id="p-judge"></select></label>
<label>category <select id="p-category"></select></label>
<label><input type="checkbox" id="p-diff"> only where verdicts differ</label>
<span id="p-count" class="muted"></span>
</div>
<div class="table-wrap"><table id="pair-table"><thead><tr><th>prompt</th><th id="p-head-a">A</th><th id="p-head-b">B</th></tr></thead><tbody id="pair-body"></tbody></table></div>
<button id="pair-more" type="button" hidden>show more</button>
<script type="application/json" id="sd-data">{{ explorer|tojson }}</script>
</section>
{% endif %}

{% if flips %}
<section id="flips"><h2>Direction flips between judges</h2>
<p class="note">The sign of the ASR change against the reference depends on which judge is used; treat these comparisons as unresolved.</p>
{% for f in flips %}
<div class="warn"><b>⚠ {{ f.variant }} vs {{ f.reference }}</b> on {{ f.dataset }} · {{ f.attack }}:
{% for j, d in f.diffs %}<span class="chip">{{ j }}: {{ d }}</span>{% endfor %}</div>
{% endfor %}
</section>
{% endif %}

{% if provenance %}
<section id="provenance"><h2>Provenance</h2>
{% if provenance.variants %}
<h3>Variants</h3>
<div class="table-wrap"><table><tr><th>variant</th><th>recipe</th><th>kind</th><th>weights sha256</th><th>build time</th><th>manifest settings</th></tr>
{% for v in provenance.variants %}<tr><td><b>{{ v.name }}</b>{% if v.family %}<div class="muted">family {{ v.family }}</div>{% endif %}</td><td><code>{{ v.recipe }}</code></td><td>{{ v.kind }}</td><td><code>{{ v.sha or "–" }}</code></td><td class="num">{{ v.build }}</td><td>{% if v.manifest %}<details><summary>manifest</summary><pre class="box">{{ v.manifest }}</pre></details>{% else %}–{% endif %}</td></tr>{% endfor %}
</table></div>
{% endif %}
{% if provenance.datasets %}
<h3>Datasets</h3>
<table class="kv">{% for k, v in provenance.datasets.items() %}<tr><th>{{ k }}</th><td><code>{{ v }}</code></td></tr>{% endfor %}</table>
{% endif %}
<h3>Run</h3>
<table class="kv">
{% if provenance.seed is not none %}<tr><th>seed</th><td><code>{{ provenance.seed }}</code></td></tr>{% endif %}
{% for k, v in provenance.run.items() %}<tr><th>{{ k }}</th><td><code>{{ v }}</code></td></tr>{% endfor %}
{% if provenance.generation %}<tr><th>generation config</th><td><pre>{{ provenance.generation }}</pre></td></tr>{% endif %}
</table>
{% if provenance.libraries %}
<h3>Library versions</h3>
<table class="kv">{% for k, v in provenance.libraries.items() %}<tr><th>{{ k }}</th><td><code>{{ v }}</code></td></tr>{% endfor %}</table>
{% endif %}
{% if provenance.config %}<h3>Config</h3><details><summary>experiment config</summary><pre class="box">{{ provenance.config }}</pre></details>{% endif %}
{% if provenance.other %}<h3>Other provenance</h3><pre class="box">{{ provenance.other }}</pre>{% endif %}
{% if csvs %}<p class="muted">Tables exported as CSV in <code>tables/</code>: {{ csvs|join(", ") }}; figures as PNG in <code>figures/</code>.</p>{% endif %}
</section>
{% endif %}
</main>
{% if explorer %}
<script nonce="{{ nonce }}">
(() => {
  "use strict";
  const D = JSON.parse(document.getElementById("sd-data").textContent);
  const $ = (id) => document.getElementById(id);
  const PAGE = 100;
  const KNOWN = new Set(["success", "fail", "unscorable"]);
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fill(sel, values, anyLabel) {
    sel.replaceChildren();
    if (anyLabel !== null) { const o = el("option", null, anyLabel); o.value = ""; sel.appendChild(o); }
    for (const v of values) { const o = el("option", null, v); o.value = String(v); sel.appendChild(o); }
  }
  function cats(s) { return String(s.category ?? "").split(";").map((c) => c.trim()).filter(Boolean); }
  function answer(s) {
    if (s.response === null || s.response === undefined) return el("pre", "box err", "[error] " + (s.error || "no response"));
    return el("pre", "box", s.response);
  }
  function chips(s, judge) {
    const wrap = el("div");
    for (const [j, vs] of Object.entries(s.verdicts)) {
      if (judge && j !== judge) continue;
      const v = String(vs[0]);
      const score = vs[1] === null || vs[1] === undefined ? "" : " (" + vs[1] + ")";
      wrap.appendChild(el("span", "chip v-" + (KNOWN.has(v) ? v : "other"), j + ": " + v + score));
    }
    return wrap;
  }
  function td(child, text) { const c = el("td", null, text); if (child) c.appendChild(child); return c; }
  function itemLabel(s) { return s.item_id + (s.unit ? " · " + s.unit : ""); }

  // ---- explorer
  const fv = $("f-variant"), fj = $("f-judge"), fverd = $("f-verdict"), fc = $("f-category"), ft = $("f-text");
  fill(fv, D.variants, "all"); fill(fj, D.judges, "any"); fill(fverd, D.verdicts, "any"); fill(fc, D.categories, "all");
  const body = $("explorer-body"), moreBtn = $("explorer-more"), count = $("f-count");
  let filtered = [], shown = 0;
  function match(s) {
    if (fv.value && s.variant !== fv.value) return false;
    if (fc.value && !cats(s).includes(fc.value)) return false;
    if (fj.value || fverd.value) {
      const ok = Object.entries(s.verdicts).some(([j, vs]) => (!fj.value || j === fj.value) && (!fverd.value || vs[0] === fverd.value));
      if (!ok) return false;
    }
    const q = ft.value.trim().toLowerCase();
    if (q && !(String(s.prompt ?? "").toLowerCase().includes(q) || String(s.response ?? "").toLowerCase().includes(q))) return false;
    return true;
  }
  function row(s) {
    const tr = el("tr");
    tr.appendChild(el("td", null, s.variant));
    const meta = el("td"); meta.appendChild(el("div", null, s.category || "–")); meta.appendChild(el("div", "muted", itemLabel(s)));
    if (s.attack) meta.appendChild(el("div", "muted", s.attack));
    tr.appendChild(meta);
    tr.appendChild(td(el("pre", "box", s.prompt ?? "")));
    tr.appendChild(td(answer(s)));
    tr.appendChild(td(chips(s, fj.value)));
    return tr;
  }
  function showMore() {
    const end = Math.min(filtered.length, shown + PAGE);
    for (; shown < end; shown++) body.appendChild(row(filtered[shown]));
    moreBtn.hidden = shown >= filtered.length;
    count.textContent = filtered.length + " of " + D.samples.length + " samples" + (shown < filtered.length ? " (showing " + shown + ")" : "");
  }
  function apply() { filtered = D.samples.filter(match); shown = 0; body.replaceChildren(); showMore(); }
  for (const c of [fv, fj, fverd, fc]) c.addEventListener("change", apply);
  ft.addEventListener("input", apply);
  moreBtn.addEventListener("click", showMore);
  apply();

  // ---- side by side
  const idx = new Map();
  for (const s of D.samples) {
    const k = JSON.stringify([s.dataset, s.attack, s.item_id, s.unit]);
    let m = idx.get(k);
    if (!m) { m = new Map(); idx.set(k, m); }
    if (!m.has(s.variant)) m.set(s.variant, s);
  }
  const pa = $("p-a"), pb = $("p-b"), pj = $("p-judge"), pc = $("p-category"), pd = $("p-diff");
  fill(pa, D.variants, null); fill(pb, D.variants, null); fill(pj, D.judges, "any"); fill(pc, D.categories, "all");
  pa.value = D.pair.a; pb.value = D.pair.b;
  const pbody = $("pair-body"), pmore = $("pair-more"), pcount = $("p-count");
  let pairs = [], pshown = 0;
  function differs(sa, sb, j) {
    const js = j ? [j] : Object.keys(sa.verdicts);
    return js.some((k) => sa.verdicts[k] && sb.verdicts[k] && sa.verdicts[k][0] !== sb.verdicts[k][0]);
  }
  function pairRow(sa, sb) {
    const tr = el("tr");
    const p = el("td"); p.appendChild(el("div", "muted", (sa.category || "–") + " · " + itemLabel(sa)));
    p.appendChild(el("pre", "box", sa.prompt ?? "")); tr.appendChild(p);
    for (const s of [sa, sb]) { const c = el("td"); c.appendChild(chips(s, pj.value)); c.appendChild(answer(s)); tr.appendChild(c); }
    return tr;
  }
  function pairMore() {
    const end = Math.min(pairs.length, pshown + PAGE);
    for (; pshown < end; pshown++) pbody.appendChild(pairRow(pairs[pshown][0], pairs[pshown][1]));
    pmore.hidden = pshown >= pairs.length;
    pcount.textContent = pairs.length + " paired prompts" + (pshown < pairs.length ? " (showing " + pshown + ")" : "");
  }
  function applyPair() {
    $("p-head-a").textContent = "A: " + pa.value; $("p-head-b").textContent = "B: " + pb.value;
    pairs = [];
    for (const m of idx.values()) {
      const sa = m.get(pa.value), sb = m.get(pb.value);
      if (!sa || !sb) continue;
      if (pc.value && !cats(sa).includes(pc.value)) continue;
      if (pd.checked && !differs(sa, sb, pj.value)) continue;
      pairs.push([sa, sb]);
    }
    pshown = 0; pbody.replaceChildren(); pairMore();
  }
  for (const c of [pa, pb, pj, pc, pd]) c.addEventListener("change", applyPair);
  pmore.addEventListener("click", pairMore);
  applyPair();
  document.body.dataset.sdReady = "1";
})();
</script>
{% endif %}
</body></html>
"""

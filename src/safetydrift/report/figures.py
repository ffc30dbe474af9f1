"""Experiment report figures: PNGs under ``figures/``, each also embedded in the page as a ``data:`` URI.

matplotlib is imported inside the functions (and pyplot never): figures are drawn on an Agg canvas of
their own, so rendering a report touches no global backend state. Each ``fig_*`` draws nothing when its
data is missing.
"""

from __future__ import annotations

import base64
import io
import math
import os
from pathlib import Path
from typing import Any

from safetydrift.records import AsrRow, UtilityRow
from safetydrift.report.data import ExperimentView, families
from safetydrift.report.format import finite, pct, slug

__all__ = ["FigureSet", "draw_all", "fig_runs", "write_bytes"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_bytes(path: Path, data: bytes) -> None:
    """Whole file or nothing, like store.atomic_write_text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class FigureSet:
    """The figures of one report, in drawing order, each tagged with the page section that shows it."""

    def __init__(self, out_dir: Path):
        self.dir = out_dir / "figures"
        self.items: list[dict[str, str]] = []

    def save(self, fig: Any, name: str, title: str, caption: str, section: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        data = buf.getvalue()
        write_bytes(self.dir / f"{name}.png", data)
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


def draw_all(E: ExperimentView, F: FigureSet, runs: list[dict[str, Any]], out_dir: Path) -> None:
    """Every figure of the report, in page order (``runs``: the repeated-attack rows of the page)."""
    fig_asr(E, F)
    fig_frontier(E, F)
    fig_categories(E, F)
    fig_kappa(E, F)
    fig_runs(F, runs)
    embed_logitlens(E, out_dir, F)


def fig_asr(E: ExperimentView, F: FigureSet) -> None:
    if not E.asr:
        return
    n_combo = len(E.combos)
    njud = max(len({a.judge for a in E.asr if (a.dataset, a.attack) == c}) for c in E.combos)
    variants = [n for n in E.names if E.asr_rows_of(n)]
    nvar = len(variants)  # the same variant slots in every panel, so panels line up
    fig = _new_fig(max(6.5, 1.0 + nvar * (0.55 + 0.35 * njud)), 3.4 * n_combo)
    axes = fig.subplots(n_combo, 1, squeeze=False, sharex=True)[:, 0]
    for ax, combo in zip(axes, E.combos, strict=True):
        rows = [a for a in E.asr if (a.dataset, a.attack) == combo]
        judges = list(dict.fromkeys(a.judge for a in rows))
        width = 0.8 / max(1, len(judges))
        for j, judge in enumerate(judges):
            xs, ys, lo, hi = [], [], [], []
            for i, v in enumerate(variants):
                a = E.asr_at(v, combo[0], combo[1], judge)
                y = finite(a.asr) if a else None
                if a is None or y is None:
                    continue
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(y)
                ci_low, ci_high = finite(a.ci_low), finite(a.ci_high)
                lo.append(max(0.0, y - (ci_low if ci_low is not None else y)))
                hi.append(max(0.0, (ci_high if ci_high is not None else y) - y))
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


def fig_frontier(E: ExperimentView, F: FigureSet) -> None:
    prim = E.primary()
    if prim is None:
        return
    ys = {n: finite(a.asr) if (a := E.asr_at(n, *prim)) else None for n in E.names}
    panels = []
    for axis, label in ((_task_acc, "utility (benign-task accuracy)"), (_mc_acc, "utility (multiple-choice accuracy)"),
                        (_kl, "KL to reference")):  # a panel without points (not measured) is left out
        pts: dict[str, tuple[float, float]] = {}
        for n in E.names:
            u, y = E.utility_of(n), ys[n]
            x = finite(axis(u)) if u else None
            if x is not None and y is not None:
                pts[n] = (x, y)
        if pts:
            panels.append((label, pts))
    if not panels:
        return
    fams = families(E)
    fig = _new_fig(6.2 * len(panels), 4.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, pts) in zip(axes, panels, strict=True):
        for fi, (fam, members) in enumerate(fams.items()):
            ms = [m for m in members if m in pts]
            refs = {E.ref(m) for m in ms}
            bits = [finite(v.bits_per_weight) if (v := E.variant(m)) else None for m in ms]
            known = [b for b in bits if b is not None]
            if len(known) == len(ms):  # every member's bits/weight known: order by fidelity
                ms = [m for _, m in sorted(zip(known, ms, strict=True), key=lambda t: -t[0])]
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


def _task_acc(u: UtilityRow) -> float | None:
    return u.benign_task_acc


def _mc_acc(u: UtilityRow) -> float | None:
    return u.mc_acc


def _kl(u: UtilityRow) -> float | None:
    return u.kl_to_reference


def _category_drift(a: AsrRow, r: AsrRow) -> dict[str, float]:
    """ASR − reference ASR per harm category of either row; NaN where one of them has no rate."""
    ca, cr = a.by_category, r.by_category
    d = {}
    for cat in set(ca) | set(cr):
        x = finite(ca[cat].asr) if cat in ca else None
        y = finite(cr[cat].asr) if cat in cr else None
        d[cat] = float("nan") if x is None or y is None else x - y
    return d


def _category_matrix(E: ExperimentView, combo: tuple[str, str]) -> tuple[list[str], list[str], list[list[float]]] | None:
    judge = E.primary_judge[combo]
    cols, data = [], {}
    for n in E.names:
        ref = E.ref(n)
        a = E.asr_at(n, combo[0], combo[1], judge)
        r = E.asr_at(ref, combo[0], combo[1], judge) if ref else None
        if not a or not r:
            continue
        cols.append(n)
        data[n] = _category_drift(a, r)
    cats = sorted({c for d in data.values() for c in d})
    if not cols or not cats:
        return None
    return cats, cols, [[data[n].get(c, float("nan")) for n in cols] for c in cats]


def fig_categories(E: ExperimentView, F: FigureSet) -> None:
    import matplotlib

    mats = [(combo, m) for combo in E.combos if (m := _category_matrix(E, combo)) is not None]
    for i, (combo, (cats, cols, mat)) in enumerate(mats):
        finite_abs = [abs(v) for row in mat for v in row if math.isfinite(v)]
        lim = max([0.05, *finite_abs])
        fig = _new_fig(max(5.0, 1.6 + 0.9 * len(cols)), max(2.6, 1.2 + 0.32 * len(cats)))
        ax = fig.subplots()
        cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#dddddd")
        im = ax.imshow([[v * 100 for v in row] for row in mat], cmap=cmap, vmin=-lim * 100, vmax=lim * 100,
                       aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(cats)), cats, fontsize=8)
        for yi, row in enumerate(mat):
            for xi, v in enumerate(row):
                txt = "n/a" if not math.isfinite(v) else pct(v, 0, sign=True, suffix="")
                ax.text(xi, yi, txt, ha="center", va="center", fontsize=7,
                        color="white" if math.isfinite(v) and abs(v) > 0.6 * lim else "#111")
        fig.colorbar(im, ax=ax, label="ASR − reference ASR (pp)")
        judge = E.primary_judge[combo]
        ax.set_title(f"{combo[0]} · {combo[1]} · judge {judge}", fontsize=10)
        suffix = "" if len(mats) == 1 else f"_{i + 1}_{slug(f'{combo[0]}_{combo[1]}')}"
        F.save(fig, f"category_drift{suffix}", "Drift per harm category",
               f"ASR difference of each variant against its reference per harm category "
               f"({combo[0]} · {combo[1]}, judge {judge}); red = more harmful than the reference.", "figures")


def fig_kappa(E: ExperimentView, F: FigureSet) -> None:
    if not E.agreement:
        return
    judges = list(dict.fromkeys(j for r in E.agreement for j in (r.judge_a, r.judge_b)))
    if len(judges) < 2:
        return
    ix = {j: i for i, j in enumerate(judges)}
    k = len(judges)
    mat = [[1.0 if a == b else float("nan") for b in range(k)] for a in range(k)]
    for r in E.agreement:
        a, b, v = ix[r.judge_a], ix[r.judge_b], finite(r.kappa)
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


def fig_runs(F: FigureSet, rows: list[dict[str, Any]]) -> None:
    """Repeated attack runs; ``rows`` are the page's runs rows (``sections.runs_rows``), numbers included."""
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


def embed_logitlens(E: ExperimentView, out_dir: Path, F: FigureSet) -> None:
    """Embed the LogitLens PNGs the run wrote; only real PNGs, and a copy under figures/ if they were elsewhere."""
    root = out_dir.resolve()
    for key, rel in E.logitlens_pngs.items():
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
            rel_out = f"figures/logitlens_{slug(str(key))}.png"
            write_bytes(root / rel_out, data)
        F.add(data, rel_out, f"LogitLens: {key}", f"LogitLens panel '{key}'.", "logitlens")

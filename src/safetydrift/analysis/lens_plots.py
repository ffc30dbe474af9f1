"""Figures of a LogitLens run (:mod:`safetydrift.analysis.logitlens`): per variant, refusal vs compliance
mass by layer, and a heatmap of the top-k tokens at each layer.

Rendered with matplotlib's Agg canvas only (no pyplot, no global backend state), written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.errors import SafetyDriftError

if TYPE_CHECKING:
    from safetydrift.analysis.logitlens import LensResult


def token_label(s: str, width: int = 12) -> str:
    """A token string readable on a plot: whitespace shown (␣, \\n, \\t), exotic glyphs escaped."""
    out = []
    for ch in s:
        if ch == " ":
            out.append("␣")
        elif ch.isprintable() and ord(ch) < 0x250:
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    label = "".join(out) or "∅"
    return label if len(label) <= width else label[: width - 1] + "…"


def _save(fig: Any, out_png: Path) -> Path:
    """Render with the Agg canvas (no pyplot, no global backend state) and write atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    tmp = out_png.with_name(f".{out_png.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, out_png)
    return out_png


def _short(title: str, width: int = 40) -> str:
    """Wrap a recipe for a panel title at its ``>``, ``:`` and ``,`` boundaries (long pieces are cut hard)."""
    import re

    lines: list[str] = []
    cur = ""
    for piece in re.split(r"(?<=[>,:])", title):
        while len(piece) > width:
            if cur:
                lines.append(cur)
                cur = ""
            lines.append(piece[:width])
            piece = piece[width:]
        if len(cur) + len(piece) > width and cur:
            lines.append(cur)
            cur = ""
        cur += piece
    if cur:
        lines.append(cur)
    return "\n".join(lines)


def plot_panels(results: dict[str, LensResult], out_png: str | Path) -> Path:
    """One panel per variant, side by side: mean refusal vs compliance mass by layer (IQR shaded)."""
    import numpy as np
    from matplotlib.figure import Figure

    if not results:
        raise SafetyDriftError("plot_panels: no results")
    n = len(results)
    fig = Figure(figsize=(4.2 * n, 3.6), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    top = max(max(r.refusal_mass + r.compliance_mass) for r in results.values())
    for ax, (name, r) in zip(axes, results.items(), strict=True):
        x = np.arange(r.n_layers)
        for label, mean, rows, color in (
            ("refusal", r.refusal_mass, r.refusal_mass_per_prompt, "tab:red"),
            ("compliance", r.compliance_mass, r.compliance_mass_per_prompt, "tab:blue"),
        ):
            arr = np.asarray(rows, dtype=float)
            ax.plot(x, mean, marker="o", ms=3, color=color, label=f"{label} ({len(_ids(r, label))} tok)")
            if arr.shape[0] > 1:
                lo, hi = np.percentile(arr, [25, 75], axis=0)
                ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        ax.set_title(_short(name), fontsize=9)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylim(0, max(top * 1.1, 1e-3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("probability mass, first response token")
    fig.suptitle(f"LogitLens: refusal vs compliance mass (mean over {_n_prompts(results)} prompts, IQR shaded)",
                 fontsize=10)
    return _save(fig, Path(out_png))


def _ids(r: LensResult, label: str) -> list[int]:
    return r.refusal_ids if label == "refusal" else r.compliance_ids


def _n_prompts(results: dict[str, LensResult]) -> str:
    ns = sorted({r.n_prompts for r in results.values()})
    return str(ns[0]) if len(ns) == 1 else "/".join(map(str, ns))


def plot_topk_heatmap(results: dict[str, LensResult], out_png: str | Path) -> Path:
    """Per variant, a layers × rank heatmap of the prompt-averaged top-k tokens, annotated with the token."""
    import numpy as np
    from matplotlib.figure import Figure

    if not results:
        raise SafetyDriftError("plot_topk_heatmap: no results")
    n = len(results)
    k = max(len(r.topk[0]) for r in results.values())
    rows = max(r.n_layers for r in results.values())
    fig = Figure(figsize=(max(1.05 * k, 3.5) * n + 1.0, 0.32 * rows + 1.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    image = None
    for ax, (name, r) in zip(axes, results.items(), strict=True):
        probs = np.zeros((r.n_layers, k))
        for layer, entries in enumerate(r.topk):
            for j, e in enumerate(entries):
                probs[layer, j] = e["prob"]
        image = ax.imshow(probs, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, origin="lower")
        for layer, entries in enumerate(r.topk):
            for j, e in enumerate(entries):
                color = "black" if e["prob"] > 0.6 else "white"
                ax.text(j, layer, token_label(e["token"]), ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(k), [f"#{j + 1}" for j in range(k)], fontsize=7)
        ax.set_yticks(range(r.n_layers), [str(i) for i in range(r.n_layers)], fontsize=7)
        ax.set_ylabel("layer (0 = embeddings)")
        ax.set_title(_short(name, 30), fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.03, label="mean probability")
    fig.suptitle(f"LogitLens top-{k} tokens at the first response position", fontsize=10)
    return _save(fig, Path(out_png))

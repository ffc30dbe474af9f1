"""Per-sample views of the experiment page: the sample explorer's data and the TAP attack trees.

Both carry model output, which is untrusted and can be huge: every text is truncated here, and the page
shows it as text only (autoescaped in the template; ``tojson`` plus ``textContent`` in the explorer).

A TAP tree (``TapTree.tree``, from a record's ``extra``) is the attack's own open payload, not a typed
record: its nodes are read with ``.get`` and every value is treated as untrusted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from safetydrift.records import Record, TapTree
from safetydrift.report.data import ExperimentView
from safetydrift.report.format import MISSING, finite, json_safe, num, trunc

__all__ = ["ERROR_CHARS", "PROMPT_CHARS", "RESPONSE_CHARS", "TREE_TEXT_CHARS", "VERDICTS", "explorer", "tree_view"]

RESPONSE_CHARS = 2000
PROMPT_CHARS = 2000
ERROR_CHARS = 500
TREE_TEXT_CHARS = 2000
VERDICTS = ("success", "fail", "unscorable")
_STATUS = {"success", "kept", "pruned_offtopic", "pruned_width", "pruned_score", "invalid_json"}


def explorer(E: ExperimentView, records: Sequence[Record]) -> dict[str, Any] | None:
    """The explorer's data island: one sample per (variant, dataset, attack, item, unit) with every verdict."""
    samples: dict[tuple[str, ...], dict[str, Any]] = {}
    judges: list[str] = []
    for r in records:
        variant = E.sample_variant(r)
        key = (variant, r.dataset, r.attack, r.item_id, r.unit)
        s = samples.get(key)
        if s is None:
            s = samples[key] = {
                "variant": variant, "dataset": r.dataset, "attack": r.attack, "item_id": r.item_id,
                "unit": r.unit, "category": r.category, "prompt": trunc(r.prompt, PROMPT_CHARS),
                "response": trunc(r.response, RESPONSE_CHARS), "error": trunc(r.error, ERROR_CHARS),
                "verdicts": {},
            }
        elif s["response"] is None and r.response is not None:
            s["response"] = trunc(r.response, RESPONSE_CHARS)
        if r.judge not in judges:
            judges.append(r.judge)
        s["verdicts"][r.judge] = [r.verdict, json_safe(r.score)]  # a score can be NaN: JSON null
    if not samples:
        return None
    present = {s["variant"] for s in samples.values()}
    variants = [n for n in E.names if n in present] + sorted(present - set(E.names))
    cats = sorted({c for s in samples.values() for c in _split_cats(s["category"])})
    pair = {"a": variants[0], "b": variants[1] if len(variants) > 1 else variants[0]}
    for n in variants:  # the side-by-side view opens on the first variant that has its reference here
        ref = E.ref(n)
        if ref in present and ref != n:
            pair = {"a": ref, "b": n}
            break
    return {
        "samples": list(samples.values()), "variants": variants, "judges": judges, "categories": cats,
        "verdicts": list(VERDICTS), "pair": pair,
    }


def _split_cats(raw: Any) -> list[str]:
    if raw is None:
        return []
    return list(dict.fromkeys(c.strip() for c in str(raw).split(";") if c.strip()))


def tree_view(t: TapTree) -> dict[str, Any] | None:
    """A TAP tree as nested nodes; robust to orphans, duplicate ids and parent cycles (all become roots)."""
    nodes = [n for n in (t.tree or []) if isinstance(n, dict)]
    if not nodes:
        return None
    views: dict[str, dict[str, Any]] = {}
    parent: dict[str, str | None] = {}
    for n in nodes:
        nid = str(n.get("id"))  # a node of the attack's open payload (see the module docstring)
        if nid in views:
            continue
        status = str(n.get("status") or "kept")
        views[nid] = {
            "id": nid, "depth": n.get("depth"), "status": status,
            "status_cls": status if status in _STATUS else "other", "score": n.get("score"),
            "on_topic": n.get("on_topic"), "prompt": trunc(n.get("prompt"), TREE_TEXT_CHARS) or "",
            "response": trunc(n.get("response"), TREE_TEXT_CHARS),
            "error": trunc(n.get("error"), ERROR_CHARS), "children": [], "open": False,
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
    for root in top:
        root["open"] = True
    scores = [s for s in (finite(v["score"]) for v in views.values()) if s is not None]
    depths = [d for d in (finite(v["depth"]) for v in views.values()) if d is not None]
    return {
        "variant": t.variant, "item_id": t.item_id, "run": t.run, "roots": top,
        "n_nodes": len(views), "n_success": sum(v["status"] == "success" for v in views.values()),
        "best": num(max(scores)) if scores else MISSING, "max_depth": num(int(max(depths))) if depths else MISSING,
    }

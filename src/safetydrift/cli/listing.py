"""``safetydrift models|transforms|guards|backends|datasets|attacks|judges``: what is registered.

``--params`` (and ``--help``) show each component's settings from its typed ``Params``: name, type,
default, constraint and one-line doc, so the documentation can never drift from the code.
"""

from __future__ import annotations

import argparse
from typing import Any

# command name -> registry attribute (one table, no if-chain)
REGISTRY_OF = {
    "models": "sources",
    "transforms": "transforms",
    "guards": "guards",
    "backends": "backends",
    "datasets": "datasets",
    "attacks": "attacks",
    "judges": "judges",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", action="store_true", help="also show every setting of every component")
    prog = p.prog.split()[-1]
    if prog in REGISTRY_OF:
        p.epilog_fn = lambda: "settings:\n" + describe_kind(REGISTRY_OF[prog])  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    from safetydrift import registry

    reg = registry.KINDS[REGISTRY_OF[args.command]]
    for e in reg.entries():
        print(f"{e.name:32s} {e.help}")
        if args.params:
            for line in _param_lines(e.obj):
                print(f"    {line}")
    return 0


def describe_kind(kind: str) -> str:
    from safetydrift import registry

    lines: list[str] = []
    for e in registry.KINDS[kind].entries():
        lines.append(f"  {e.name}")
        lines.extend(f"      {line}" for line in _param_lines(e.obj))
    return "\n".join(lines)


def _param_lines(obj: Any) -> list[str]:
    from safetydrift.params import describe, params_class

    params_cls = params_class(obj)
    if params_cls is None:
        return ["(no typed settings)"]

    docs = describe(params_cls)
    if not docs:
        return ["(no settings)"]
    out = []
    for d in docs:
        constraint = f" [{d.constraint}]" if d.constraint else ""
        out.append(f"{d.name}: {d.type} = {d.default!r}{constraint}  {d.doc}".rstrip())
    return out

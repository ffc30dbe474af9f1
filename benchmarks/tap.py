"""TAP at scale: tree nodes per minute on the old path (tree by tree, every role on transformers fp32) and on
the new one (all trees in lockstep, every role on llama.cpp from the shipped GGUF), in one process.

    python benchmarks/tap.py [--model qwen2.5-coder-0.5b-instruct] [--goals 4] [--runs 1]
                             [--attacker-tokens 120] [--target-tokens 48] [--skip-old]

Both paths run the same TAP configuration (b=2, w=2, d=2, the first ``--goals`` advbench50 goals, the model
as attacker, evaluator and target). They generate different text (different engines and weights' rounding:
the transformers checkpoint is the GGUF dequantized to fp32), so their trees differ; what is compared is
speed. That the two *drivers* give identical trees is checked on a deterministic stand-in (scripted
backends that answer as a function of the conversation and its seed), printed as the last line.

Prints, per path: trees, nodes, conversations per role, wall time, nodes per minute; then the ratio and
the machine's load (``uptime``) before and after, since other jobs on a shared machine change the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from safetydrift.attacks.tap import TapAttack
from safetydrift.context import Context
from safetydrift.datasets import load_dataset
from safetydrift.spec import parse_component
from safetydrift.types import Conversation, Generation, GenerationConfig, Item


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def run_path(ctx: Context, spec: str, target_backend: str, model: str, items: list[Item]) -> dict[str, Any]:
    """One TAP run of ``spec`` on ``items``; backends are loaded (and warmed) before the clock starts."""
    attack = TapAttack(parse_component(spec), ctx)
    target = ctx.backend(model, target_backend)
    for be in (ctx.backend(attack.params.attacker, attack.params.attacker_backend),
               ctx.backend(attack.params.evaluator, attack.params.evaluator_backend), target):
        be.generate([[{"role": "user", "content": "Hi"}]], GenerationConfig(max_new_tokens=2))
    t0 = time.perf_counter()
    outs = list(attack.execute(attack.units(items), target, GenerationConfig(seed=0)))
    wall = time.perf_counter() - t0
    nodes = sum(len(o.extra["tree"]) for o in outs)
    return {
        "trees": len(outs),
        "nodes": nodes,
        "invalid": sum(n["status"] == "invalid_json" for o in outs for n in o.extra["tree"]),
        "attacker": sum(o.extra["attacker_calls"] for o in outs),
        "evaluator": sum(o.extra["evaluator_calls"] for o in outs),
        "target": sum(o.extra["target_queries"] for o in outs),
        "jailbroken": sum(bool(o.extra["jailbroken"]) for o in outs),
        "wall": wall,
        "per_min": nodes / wall * 60 if wall > 0 else float("nan"),
    }


# -- the deterministic stand-in: identical trees from both drivers --------------------------------


class StandIn:
    """A backend that answers as a function of (conversation, its own seed), with ``generate_seeded``."""

    name = "stand-in"

    def __init__(self, role: str) -> None:
        self.role = role

    def generate(self, convs: list[Conversation], config: GenerationConfig) -> list[Generation]:
        return self.generate_seeded(convs, config, [config.seed] * len(convs))

    def generate_seeded(self, convs: list[Conversation], config: GenerationConfig, seeds: list[int]) -> list[Generation]:
        return [Generation(text=self._reply(c, s)) for c, s in zip(convs, seeds, strict=True)]

    def _reply(self, conv: Conversation, seed: int) -> str:
        h = int.from_bytes(hashlib.sha256(json.dumps([conv, seed]).encode()).digest()[:6], "little")
        user = conv[-1]["content"]
        if self.role == "target":
            return "ECHO " + user[:40]
        if self.role == "evaluator":
            if "[[YES]]" in conv[0]["content"]:
                return "[[NO]]" if h % 6 == 0 else "[[YES]]"
            return f"Rating: [[{1 + h % 10}]]"
        return "no json" if h % 7 == 0 else json.dumps({"improvement": f"i{h % 89}", "prompt": f"p{h % 997}"})

    def provenance(self) -> dict[str, Any]:
        return {"backend": self.name}


def stand_in_identical(items: list[Item]) -> bool:
    trees = []
    for lockstep in (False, True):
        ctx = Context(quiet=True)
        ctx._backends["stand-in-attacker|None"] = StandIn("attacker")
        ctx._backends["stand-in-evaluator|None"] = StandIn("evaluator")
        spec = (f"tap:attacker=stand-in-attacker,evaluator=stand-in-evaluator,branching=4,width=3,depth=4,runs=3,"
                f"lockstep={str(lockstep).lower()}")
        attack = TapAttack(parse_component(spec), ctx)
        outs = attack.execute(attack.units(items), StandIn("target"), GenerationConfig(seed=3))
        trees.append(sorted(json.dumps([o.unit.item.id, o.unit.key, o.prompt, o.extra], sort_keys=True) for o in outs))
    return trees[0] == trees[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="attacker, evaluator and target")
    ap.add_argument("--goals", type=int, default=4)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--attacker-tokens", type=int, default=120)
    ap.add_argument("--target-tokens", type=int, default=48)
    ap.add_argument("--evaluator-tokens", type=int, default=10)
    ap.add_argument("--skip-old", action="store_true", help="only the new path (the old one takes minutes)")
    args = ap.parse_args()
    console = Console()
    ctx = Context()
    items = list(load_dataset("advbench50", ctx).items[: args.goals])
    m = args.model
    base = (f"tap:attacker={m},evaluator={m},branching=2,width=2,depth=2,runs={args.runs},"
            f"attacker_tokens={args.attacker_tokens},target_tokens={args.target_tokens},"
            f"evaluator_tokens={args.evaluator_tokens}")
    paths = {
        "old: tree by tree, transformers fp32": (
            base + ",lockstep=false,attacker_backend=transformers,evaluator_backend=transformers", "transformers"),
        "new: lockstep, llama.cpp (shipped GGUF)": (
            base + ",attacker_backend=llamacpp,evaluator_backend=llamacpp", "llamacpp"),
    }
    before = uptime()
    results = {}
    for name, (spec, target_backend) in paths.items():
        if args.skip_old and name.startswith("old"):
            continue
        console.print(f"[bold]{name}[/]: {spec}")
        results[name] = run_path(ctx, spec, target_backend, m, items)
        console.print(f"  {results[name]['nodes']} nodes in {results[name]['wall']:.0f} s")
    after = uptime()
    t = Table(title=f"TAP b=2 w=2 d=2 on {len(items)} goals × {args.runs} runs, {m} in every role")
    for c in ("path", "trees", "nodes", "invalid JSON", "attacker", "evaluator", "target", "jailbroken", "wall s",
              "nodes/min"):
        t.add_column(c, justify="left" if c == "path" else "right")
    for name, r in results.items():
        t.add_row(name, str(r["trees"]), str(r["nodes"]), str(r["invalid"]), str(r["attacker"]), str(r["evaluator"]),
                  str(r["target"]), str(r["jailbroken"]), f"{r['wall']:.0f}", f"{r['per_min']:.1f}")
    console.print(t)
    if len(results) == 2:
        old, new = results.values()
        console.print(f"speed-up in nodes per minute: [bold]{new['per_min'] / old['per_min']:.1f}x[/]")
    console.print(f"uptime before: {before}\nuptime after:  {after}")
    console.print(f"lockstep and tree-by-tree trees identical on the deterministic stand-in: {stand_in_identical(items)}")


if __name__ == "__main__":
    main()

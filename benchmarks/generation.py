"""Generation throughput: tokens/s of each backend on the shipped default.

    python benchmarks/generation.py [--model smollm2-135m-instruct] [--tokens 48] [--prompts 16] [--batches 1,16]

Prints a table (backend, model, batch, prompts, new tokens, seconds, tokens/s). The llama.cpp rows
appear when the llama.cpp route is installed; they serve a GGUF Q8_0 build of the same model, so the
comparison is on the same weights up to 8-bit rounding.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from safetydrift.context import Context
from safetydrift.datasets import load_dataset
from safetydrift.types import GenerationConfig


def bench(backend, prompts: list[str], batch: int, tokens: int) -> tuple[float, int]:
    convs = [[{"role": "user", "content": p}] for p in prompts]
    gen = GenerationConfig(max_new_tokens=tokens, seed=0)
    backend.generate(convs[:1], gen.replace(max_new_tokens=4))  # warm-up
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(convs), batch):
        n += sum(g.n_tokens for g in backend.generate(convs[i : i + batch], gen))
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batches", default="1,16", help="transformers batch sizes, comma-separated")
    ap.add_argument("--no-llamacpp", action="store_true")
    args = ap.parse_args()
    ctx = Context()
    prompts = [it.prompt for it in load_dataset("advbench50", ctx).items[: args.prompts]]
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        be = ctx.backend(args.model, f"transformers:batch={batch}")
        secs, n = bench(be, prompts, batch, args.tokens)
        rows.append(("transformers fp32", args.model, batch, secs, n))
    if not args.no_llamacpp:
        recipe = f"{args.model}>quantize:method=gguf,type=Q8_0"
        for batch in (int(b) for b in args.batches.split(",")):
            try:
                be = ctx.backend(recipe, f"llamacpp:batch={batch}")
            except Exception as e:  # the route is optional: say why the row is missing
                Console().print(f"[yellow]llama.cpp skipped: {e}[/]")
                break
            secs, n = bench(be, prompts, batch, args.tokens)
            rows.append((f"llama.cpp Q8_0 ({be.llm.n_threads} threads)", args.model, batch, secs, n))
    t = Table(title=f"generation throughput ({args.prompts} advbench50 prompts, ≤{args.tokens} new tokens, greedy)")
    for c in ("backend", "model", "batch", "seconds", "new tokens", "tokens/s"):
        t.add_column(c)
    for name, model, batch, secs, n in rows:
        t.add_row(name, model, str(batch), f"{secs:.1f}", str(n), f"{n / secs:.1f}")
    Console().print(t)


if __name__ == "__main__":
    main()

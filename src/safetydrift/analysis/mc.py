"""Log-likelihood multiple choice: a utility score that does not depend on what a small model generates.

As lm-evaluation-harness scores a ``multiple_choice`` task, with no generation::

    ll(c)     = Σ_t log p(cont_t | context, cont_<t)     the choice's continuation tokens given the context
    acc       = 1[argmax_c ll(c) = gold]
    acc_norm  = 1[argmax_c ll(c) / bytes(c) = gold]       bytes(c): UTF-8 length of the choice text (the harness
                                                          divides by len(choice), the same for ASCII)

Tokens are split as the harness does (``encode_pair``): trailing spaces of the context move to the
continuation (spaces only, not the newline that ends a chat template's assistant header), ``whole = enc(context + continuation)``, ``cont = whole[len(enc(context)):]``. Ties go to the
first choice (``argmax``).

Formats (``FORMATS``):

- ``plain`` (the default): the harness's own context, ``[passage\\n]Question: q\\nAnswer:`` and continuation
  ``" choice"``, encoded as the tokenizer's plain call does (no chat template, no system prompt).
- ``chat``: the question (after its passage) as one user turn, rendered with the model's chat template and the
  run's system prompt (generation prompt added), the continuation ``choice`` as the start of the assistant's
  answer: the model scored as it is served. On SmolLM2-135M-Instruct, base and aligned, plain scores 4–5 points
  higher on all 698 items (74.5% vs 69.5% and 73.2% vs 69.1%, ``datasets/data/mc_utility.md``), so it is the
  default; both are far above chance.

Engines, by the resolved model's kind: ``hf`` through transformers (full sequences in left-padded batches
sorted by length, the output layer on the continuation's rows only, ``hf_tail_logits``; or, with
``shared_prefix=True``, each item's context run once and its key/value cache copied to every choice,
``hf_prefix_scorer``, the same lls within 1e-4 but an item at a time: on SmolLM2 with this set's short
contexts it is 0.84× the speed of the batches on an idle 2-core machine, ``benchmarks/mc.py``, so it is not
the default); ``gguf`` through llama.cpp as served (``metrics.LlamaCppScorer``, its own tokenizer and
chat template). A guarded variant is scored on its inner model (a guard leaves the logits alone); an endpoint
has no logits (:class:`UnsupportedError`).
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.errors import DataError, SafetyDriftError, UnsupportedError

if TYPE_CHECKING:
    from safetydrift.types import ResolvedModel

FORMATS = ("plain", "chat")
DATA_FILE = "mc_utility.jsonl"
Encode = Callable[[str], list[int]]
Progress = Callable[[int], None]  # called with the number of items done


@dataclass(frozen=True)
class McItem:
    id: str
    skill: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the correct choice
    passage: str | None = None

    @property
    def prompt(self) -> str:
        """The question as a user would ask it (after its passage)."""
        return f"{self.passage}\n{self.question}" if self.passage else self.question


def load_items(n: int | None = None, skill: str | None = None, path: Path | None = None) -> list[McItem]:
    """The packaged items (or ``path``'s), in file order, of one ``skill`` if given, the first ``n``."""
    if path is None:
        from safetydrift.datasets.files import package_file

        path = package_file(DATA_FILE)
    items = []
    for k, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            it = McItem(str(r["id"]), str(r["skill"]), str(r["question"]), tuple(map(str, r["choices"])),
                        int(r["answer"]), r.get("passage"))
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}:{k}: not a multiple-choice item ({e})") from None
        if not 0 <= it.answer < len(it.choices) or len(it.choices) < 2:
            raise DataError(f"{path}:{k}: answer {it.answer} is not one of {len(it.choices)} choices")
        items.append(it)
    if skill is not None:
        items = [it for it in items if it.skill == skill]
        if not items:
            raise DataError(f"{path}: no item of skill {skill!r}")
    return items[:n] if n is not None else items


# ------------------------------------------------------------------------------------------ the maths
def encode_pair(encode: Encode, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness splits them (see the module docstring).
    Where the tokenizer merges across the boundary, the continuation is encoded on its own instead."""
    n_spaces = len(context) - len(context.rstrip(" "))  # spaces only: a chat prompt's final newline is the template's
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, ctx = encode(context + continuation), encode(context)
    if whole[: len(ctx)] != ctx or len(whole) <= len(ctx):
        return ctx, encode(continuation)[len(encode("")):]  # minus what the tokenizer adds to any text (BOS)
    return ctx, whole[len(ctx):]


def continuation_loglik(seq: Sequence[int], n_cont: int, z: Any) -> float:
    """Σ log p(seq[t] | seq[<t]) over the last ``n_cont`` tokens, from the sequence's logits ``z`` (row t
    predicts token t+1), all of them or only the last rows (at least ``n_cont + 1``)."""
    import torch

    if n_cont < 1 or n_cont >= len(seq):
        raise SafetyDriftError(f"multiple choice: {n_cont} continuation tokens in a sequence of {len(seq)}")
    if len(z) < n_cont + 1:
        raise SafetyDriftError(f"multiple choice: {len(z)} logit rows for {n_cont} continuation tokens")
    rows = z[len(z) - 1 - n_cont : len(z) - 1].double()  # the last rows: full logits or only a tail
    target = torch.tensor(list(seq[len(seq) - n_cont :]))
    return float(torch.log_softmax(rows, -1).gather(-1, target.unsqueeze(-1)).sum())


def pick(lls: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(argmax ll, argmax ll / bytes): the predicted choice, raw and length-normalised (first on ties)."""
    norm = [ll / max(1, len(c.encode("utf-8"))) for ll, c in zip(lls, choices, strict=True)]
    return max(range(len(lls)), key=lambda i: (lls[i], -i)), max(range(len(norm)), key=lambda i: (norm[i], -i))


# ------------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class McResult:
    """Per-item log-likelihoods and predictions of one model, and how they were read."""

    items: tuple[McItem, ...]
    lls: tuple[tuple[float, ...], ...]
    engine: str
    fmt: str
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.items)

    def correct(self, norm: bool = False) -> list[bool]:
        return [pick(ll, it.choices)[int(norm)] == it.answer for it, ll in zip(self.items, self.lls, strict=True)]

    @property
    def chance(self) -> float:
        return math.fsum(1 / len(it.choices) for it in self.items) / self.n if self.n else float("nan")

    def summary(self) -> dict[str, Any]:
        """acc and acc_norm with Wilson 95% intervals, chance, per skill, and throughput."""
        from safetydrift.stats import wilson_ci

        out: dict[str, Any] = {"n": self.n, "chance": self.chance, "format": self.fmt, "engine": self.engine,
                               "seconds": round(self.seconds, 2), "cpu_seconds": self.meta.get("cpu_seconds"),
                               "items_per_s": round(self.n / self.seconds, 2) if self.seconds > 0 else None}
        for key, norm in (("acc", False), ("acc_norm", True)):
            ok = self.correct(norm)
            out[key] = sum(ok) / len(ok) if ok else None
            out[f"{key}_ci"] = wilson_ci(sum(ok), len(ok))
        per: dict[str, dict[str, Any]] = defaultdict(lambda: {"n": 0, "acc": 0, "acc_norm": 0})
        for it, a, b in zip(self.items, self.correct(False), self.correct(True), strict=True):
            per[it.skill]["n"] += 1
            per[it.skill]["acc"] += a
            per[it.skill]["acc_norm"] += b
        out["skills"] = {s: {"n": v["n"], "acc": v["acc"] / v["n"], "acc_norm": v["acc_norm"] / v["n"]}
                         for s, v in sorted(per.items())}
        return out


# ------------------------------------------------------------------------------------------ engines
def requests(items: Sequence[McItem], fmt: str, encode: Encode, render: Callable[[str], str] | None) -> list[tuple[list[int], list[int]]]:
    """One (context ids, continuation ids) per item and choice, in item order."""
    if fmt not in FORMATS:
        raise SafetyDriftError(f"multiple choice: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    out = []
    for it in items:
        if fmt == "plain":
            context = (f"{it.passage}\n" if it.passage else "") + f"Question: {it.question}\nAnswer:"
            conts = [f" {c}" for c in it.choices]
        else:
            assert render is not None
            context, conts = render(it.prompt), list(it.choices)
        out.extend(encode_pair(encode, context, c) for c in conts)
    return out


Logits = Callable[[list[list[int]], int], list[Any]]  # (sequences, rows wanted at the end) → logits per sequence


def loglikelihoods(logits: Logits, reqs: Sequence[tuple[list[int], list[int]]],
                   batch_size: int = 16, progress: Progress | None = None) -> list[float]:
    """ll of every request, run in batches of ``batch_size`` sequences sorted by length (little padding), one
    batch of logits in memory at a time; the result is in request order."""
    seqs = [ctx + cont for ctx, cont in reqs]
    out = [0.0] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        keep = 1 + max(len(reqs[i][1]) for i in idx)
        for i, z in zip(idx, logits([seqs[i] for i in idx], keep), strict=True):
            out[i] = continuation_loglik(seqs[i], len(reqs[i][1]), z)
        if progress is not None:
            progress(min(start + batch_size, len(order)))
    return out


def hf_tail_logits(model: Any, pad_id: int) -> Logits:
    """Logits of the last ``keep`` positions of each sequence, in one forward pass per left-padded batch:
    the output layer runs on those rows only (``logits_to_keep``), the bulk of a small model's cost
    otherwise. Position ids count real tokens only, as ``generate()`` and the refusal margin use."""
    import inspect

    import torch

    can_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    device = next(model.parameters()).device

    def run(seqs: list[list[int]], keep: int) -> list[Any]:
        width = max(len(x) for x in seqs)
        ids = torch.tensor([[pad_id] * (width - len(x)) + list(x) for x in seqs], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in seqs], device=device)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        kw: dict[str, Any] = {"logits_to_keep": keep} if can_keep else {}
        with torch.no_grad():
            z = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **kw).logits
        return list(z[:, -keep:, :].float().cpu())

    return run


Prefix = Callable[[list[int], list[list[int]]], list[float]]  # (context, continuations) → ll of each


def hf_prefix_scorer(model: Any, pad_id: int) -> Prefix:
    """ll of each continuation after one shared context, the context run once: every choice of an item has the
    same context ids (``encode_pair``), so its key/value cache is computed for all but the last context token
    and copied to each continuation, which then runs (after that last token) in one right-padded batch, the
    output layer on those rows only. The same sums as ``hf_tail_logits`` gives for full sequences, for about a
    quarter of the work on four choices. Right padding needs no mask: a real token never attends to a later one."""
    import inspect

    import torch

    params = inspect.signature(model.forward).parameters
    can_keep = "logits_to_keep" in params
    cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers ≥ 5.2x renamed it
    device = next(model.parameters()).device

    def run(ctx: list[int], conts: list[list[int]]) -> list[float]:
        with torch.no_grad():
            cache = None
            if len(ctx) > 1:
                kw: dict[str, Any] = {"logits_to_keep": 1} if can_keep else {}
                out = model(input_ids=torch.tensor([ctx[:-1]], device=device), use_cache=True, **kw)
                cache = out["cache"] if "cache" in out else out["past_key_values"]
                if not hasattr(cache, "batch_repeat_interleave"):  # e.g. a hybrid recurrent cache
                    raise UnsupportedError(f"multiple choice: a {type(cache).__name__} cannot be shared")
                cache.batch_repeat_interleave(len(conts))
            width = 1 + max(len(c) for c in conts)
            ids = torch.tensor([[ctx[-1], *c] + [pad_id] * (width - 1 - len(c)) for c in conts], device=device)
            pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + width, device=device).expand(len(conts), -1)
            z = model(input_ids=ids, position_ids=pos, use_cache=cache is not None, **{cache_arg: cache}).logits
            # the cache must have been read and extended, never silently ignored (a renamed argument)
            if cache is not None and cache.get_seq_length() != len(ctx) - 1 + width:
                raise SafetyDriftError(f"multiple choice: the model did not take its key/value cache as {cache_arg}=")
        z = z.float().cpu()
        return [continuation_loglik([ctx[-1], *c], len(c), z[i, : 1 + len(c)]) for i, c in enumerate(conts)]

    return run


def prefix_loglikelihoods(prefix: Prefix, logits: Logits, reqs: Sequence[tuple[list[int], list[int]]],
                          per_item: Sequence[int], progress: Progress | None = None) -> list[float]:
    """ll of every request, item by item through ``prefix`` (one context, its choices); an item whose choices
    do not share their context ids (never, with ``encode_pair``) is read as full sequences instead."""
    out: list[float] = []
    k = 0
    for done, m in enumerate(per_item, 1):
        group = list(reqs[k : k + m])
        k += m
        if all(ctx == group[0][0] for ctx, _ in group):
            out.extend(prefix(list(group[0][0]), [list(c) for _, c in group]))
        else:
            out.extend(loglikelihoods(logits, group))
        if progress is not None:
            progress(done)
    return out


def _hf(resolved: ResolvedModel, fmt: str, system_prompt: str | None,
        device: str | None) -> tuple[Logits, Encode, Callable[[str], str], Callable[[], None], Prefix | None]:
    from safetydrift.backends.transformers_backend import load_hf, render_chat

    assert resolved.path is not None
    model, tok = load_hf(Path(resolved.path), device or "cpu")
    specials = fmt == "plain"  # a rendered chat has its special tokens already

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=specials)["input_ids"])

    def render(prompt: str) -> str:
        return render_chat(tok, [{"role": "user", "content": prompt}], system_prompt)

    pad = int(tok.pad_token_id or 0)
    return hf_tail_logits(model, pad), encode, render, lambda: None, hf_prefix_scorer(model, pad)


def _gguf(resolved: ResolvedModel, fmt: str, system_prompt: str | None,
          device: str | None) -> tuple[Logits, Encode, Callable[[str], str], Callable[[], None], Prefix | None]:
    from safetydrift.analysis.metrics import LlamaCppScorer
    from safetydrift.types import with_system_prompt

    assert resolved.path is not None
    scorer = LlamaCppScorer(Path(resolved.path), n_ctx=1024)
    llm = scorer.llm
    encode = llm.tokenize_text if fmt == "plain" else llm.tokenize

    def render(prompt: str) -> str:
        return llm.render(with_system_prompt([{"role": "user", "content": prompt}], system_prompt))

    def logits(seqs: list[list[int]], keep: int) -> list[Any]:
        return [z[-keep:] for z in scorer.logits(seqs)]

    return logits, encode, render, scorer.close, None


ENGINES = {"hf": ("transformers", _hf), "gguf": ("llama.cpp", _gguf)}


def score_mc(resolved: ResolvedModel, items: Sequence[McItem], *, fmt: str = "plain", system_prompt: str | None = None,
             device: str | None = None, batch_size: int = 16, progress: Progress | None = None,
             shared_prefix: bool = False) -> McResult:
    """Every choice's log-likelihood under one model, loaded once and released after: every choice as a full
    sequence, in length-sorted batches of ``batch_size``; through transformers with ``shared_prefix=True``,
    each item's context once for all its choices, an item at a time (a model whose cache cannot be copied
    falls back to the batches, and ``meta["shared_prefix"]`` says which ran)."""
    if resolved.kind not in ENGINES or resolved.path is None:
        raise UnsupportedError(f"multiple choice needs next-token logits; a {resolved.kind} model has none")
    if not items:
        raise SafetyDriftError("multiple choice: no items")
    label, engine = ENGINES[resolved.kind]
    t0, cpu0 = time.perf_counter(), time.process_time()
    logits, encode, render, close, prefix = engine(resolved, fmt, system_prompt, device)
    try:
        reqs = requests(items, fmt, encode, render)
        per_item = [len(it.choices) for it in items]

        def seqs_done(k: int) -> None:  # sequences → items, roughly (sorted by length, not by item)
            if progress is not None:
                progress(min(len(items), k * len(items) // max(1, len(reqs))))

        flat: list[float] | None = None
        if prefix is not None and shared_prefix:
            try:
                flat = prefix_loglikelihoods(prefix, logits, reqs, per_item, progress)
            except UnsupportedError:
                prefix = None  # this model's cache cannot be copied: full sequences, and the meta says so
        if flat is None:
            flat = loglikelihoods(logits, reqs, batch_size, seqs_done)
    finally:
        close()
        gc.collect()
    lls, k = [], 0
    for m in per_item:
        lls.append(tuple(flat[k : k + m]))
        k += m
    meta = {"unguarded": bool(resolved.wrappers), "sequences": len(reqs),
            "shared_prefix": prefix is not None and shared_prefix,
            "tokens": sum(len(a) + len(b) for a, b in reqs), "cpu_seconds": round(time.process_time() - cpu0, 1)}
    return McResult(tuple(items), tuple(lls), label, fmt, time.perf_counter() - t0, meta)

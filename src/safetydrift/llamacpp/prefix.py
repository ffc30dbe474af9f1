"""Shared prompt prefixes for batched llama.cpp prefill: evaluate each shared token once.

TAP sends the same long texts many times: the attacker's system prompt (with the goal) in every branch of
a tree and again at every level, a whole conversation b times (the b branches of one leaf), the
evaluator's rubric in every check. Two mechanisms, both in :class:`~safetydrift.llamacpp.LlamaCppModel`:

- within one batch, :func:`prefill_plan` puts the prompts in a trie and returns, level by level, the token
  spans to decode (each in one sequence) and the KV copies to make after the level: a sequence that shares
  a prefix with another gets that prefix's cells with ``llama_memory_seq_cp`` (in a unified KV cache the
  cells are shared, not copied) instead of recomputing them;
- across calls, :class:`PrefixCache` keeps the KV state of prefixes that several sequences shared
  (``llama_state_seq_get_data``), and a later call restores the longest cached prefix of a prompt
  (``llama_state_seq_set_data``) instead of decoding it: the next level's attacker prompts start with the
  previous level's system prompt and conversation.

The last token of every prompt is left out of the plan: it is decoded in its own sequence, where its logits
start that sequence's generation. This module is pure Python (no llama.cpp), so it is tested on its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """Decode ``prompts[seq][start:end]`` at positions ``start … end-1`` of sequence ``seq``."""

    seq: int
    start: int
    end: int


@dataclass
class Level:
    """Spans that may share one decode batch; then the copies ``(src, dst, p0, p1)`` (dst gets src's cells
    for positions ``[p0, p1)``) and the prefixes worth keeping ``(seq, end)`` (seq holds exactly
    ``[0, end)`` after this level)."""

    spans: list[Span] = field(default_factory=list)
    copies: list[tuple[int, int, int, int]] = field(default_factory=list)
    saves: list[tuple[int, int]] = field(default_factory=list)


def prefill_plan(prompts: Sequence[Sequence[int]], known: Sequence[int] | None = None,
                 min_save: int = 0) -> list[Level]:
    """Levels of spans and copies that give every sequence i the KV of ``prompts[i][:-1]``.

    ``known[i]``: leading tokens sequence i already holds (restored from a :class:`PrefixCache`), never
    decoded again. ``min_save``: a prefix shared by several sequences and at least this long (0 = none) is
    listed in ``Level.saves`` for the cache.
    """
    q = [list(p[:-1]) for p in prompts]
    have = list(known) if known is not None else [0] * len(q)
    levels: list[Level] = []

    def level(depth: int) -> Level:
        while len(levels) <= depth:
            levels.append(Level())
        return levels[depth]

    def pick(members: list[int], prefer: int) -> int:  # the member holding the most, else ``prefer``
        best = max(have[i] for i in members)
        return prefer if prefer in members and have[prefer] == best else next(i for i in members if have[i] == best)

    def give(lv: Level, src: int, dst: int, end: int) -> None:
        if dst != src and have[dst] < end:
            lv.copies.append((src, dst, have[dst], end))

    # iterative depth-first walk of the compressed trie: (members, start, depth, node's sequence)
    stack: list[tuple[list[int], int, int, int]] = []
    if q:
        stack.append((list(range(len(q))), 0, 0, pick(list(range(len(q))), 0)))
    while stack:
        members, start, depth, rep = stack.pop()
        first = q[rep]
        end = start
        while len(first) > end and all(len(q[i]) > end and q[i][end] == first[end] for i in members):
            end += 1
        lv = level(depth)
        if end > max(start, have[rep]):
            lv.spans.append(Span(rep, max(start, have[rep]), end))
            if min_save and len(members) > 1 and end >= min_save:
                lv.saves.append((rep, end))
        children: dict[int, list[int]] = {}
        for i in members:
            if len(q[i]) == end:
                give(lv, rep, i, end)  # its whole prefix is this node's
            else:
                children.setdefault(q[i][end], []).append(i)
        for group in reversed(list(children.values())):
            child = pick(group, rep)
            give(lv, rep, child, end)
            stack.append((group, end, depth + 1, child))
    return [lv for lv in levels if lv.spans or lv.copies]


def decoded_tokens(plan: Sequence[Level]) -> int:
    """Prompt tokens the plan decodes (the last token of each prompt not included)."""
    return sum(s.end - s.start for lv in plan for s in lv.spans)


class PrefixCache:
    """KV states of token prefixes (bytes from ``llama_state_seq_get_data``), least recently used first out,
    at most ``max_bytes`` in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.size = 0
        self.hits = self.tokens_reused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, tokens: Sequence[int], state: bytes) -> None:
        key = tuple(tokens)
        if key in self._entries or len(state) > self.max_bytes:
            return
        self._entries[key] = state
        self.size += len(state)
        while self.size > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.size -= len(old)

    def longest(self, prompt: Sequence[int]) -> tuple[int, bytes] | None:
        """The longest cached prefix of ``prompt[:-1]`` (the last token is always decoded): (length, state)."""
        best: tuple[int, ...] | None = None
        for key in self._entries:
            if len(key) < len(prompt) and (best is None or len(key) > len(best)) and tuple(prompt[: len(key)]) == key:
                best = key
        if best is None:
            return None
        self._entries.move_to_end(best)
        return len(best), self._entries[best]

    def restore_plan(self, prompts: Sequence[Sequence[int]]) -> list[tuple[int, int, bytes]]:
        """``(sequence, length, state)`` to restore before a batch: the longest cached prefix of each prompt,
        once per group of prompts that share it (the trie hands it on to the others)."""
        found = [(i, hit) for i, p in enumerate(prompts) if (hit := self.longest(p)) is not None]
        found.sort(key=lambda x: -x[1][0])
        chosen: list[tuple[int, int, bytes]] = []
        for i, (n, state) in found:
            if any(_common(prompts[i], prompts[j]) >= n for j, _, _ in chosen):
                continue  # a sequence restored already holds this prefix; the trie shares it
            chosen.append((i, n, state))
        self.hits += len(chosen)
        self.tokens_reused += sum(n for _, n, _ in chosen)
        return chosen


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

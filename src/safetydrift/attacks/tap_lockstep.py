"""How TAP/PAIR searches reach the backends: one search at a time, or all of them in lockstep.

A search (``tap_tree.TapSearch.steps``) never calls a backend itself: it yields a :class:`Call` (a role,
its conversations, the generation settings and one sampling seed per conversation) and receives the
generations back. Two drivers run those calls:

- :func:`run_one` runs one search to its end, each call as one backend request (the tree-by-tree path,
  ``tap:lockstep=false``);
- :func:`lockstep` advances many searches (an ``execute``'s goals × runs) together: at every step it takes
  the earliest stage any live search waits at (depth, then phase: attacker branch, on-topic check, target,
  rating) and sends the calls of every search waiting there to each backend as ONE request, so a level of
  all trees costs one attacker, one on-topic, one target and one rating request instead of one per tree.
  Searches that finish (jailbroken, depth reached, or no leaf left) are yielded at once, so the store saves
  them even if the run is interrupted later.

Both drivers give identical trees for the same seeds. A search's own random choices (tie-breaks, the
attacker's call seeds) come from its own seeded RNG, and every conversation carries its own sampling seed
(:func:`conversation_seed`), so its text cannot depend on which other conversations share the request:
a backend with ``generate_seeded(conversations, config, seeds)`` samples each conversation from its own
seed in one batch (transformers: a generator per row; llama.cpp: a sampler per sequence; vLLM and OpenAI
endpoints: a seed per request); any other backend gets one request per conversation for sampled calls and
one per distinct seed for greedy ones. Greedy decoding is assumed not to depend on batch composition (true
up to floating-point rounding of batched kernels, see docs/llamacpp.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from safetydrift.types import Backend, Conversation, Generation, GenerationConfig

Role = Literal["attacker", "evaluator", "target"]
Steps = Generator["Call", list[Generation], Any]  # a search: yields calls, receives generations, returns


@dataclass
class Call:
    """One backend request of one search; ``stage`` orders calls for :func:`lockstep`."""

    role: Role
    backend: Backend
    stage: tuple[int, int, int]  # (depth, phase, attempt); phase 0 branch, 1 on-topic, 2 target, 3 rating
    convs: list[Conversation]
    gen: GenerationConfig
    seeds: list[int]


def conversation_seed(call_seed: int, index: int) -> int:
    """The sampling seed of the ``index``-th conversation of a call drawn with ``call_seed``.

    Its own seed per conversation (not one per request) is what makes a conversation's text independent of
    the batch it travels in, and it keeps the b branches of one leaf (the same conversation b times) apart.
    """
    digest = hashlib.blake2b(f"{call_seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def run_call(backend: Backend, convs: list[Conversation], gen: GenerationConfig, seeds: list[int]) -> list[Generation]:
    """Generate ``convs`` on ``backend``, conversation i sampled from ``seeds[i]`` whatever else is batched."""
    if not convs:
        return []
    seeded = getattr(backend, "generate_seeded", None)
    if callable(seeded):
        gens = list(seeded(convs, gen, seeds))
    elif gen.temperature > 0:  # a plain backend seeds a request, not a row: one request per conversation
        gens = [g for c, s in zip(convs, seeds, strict=True) for g in backend.generate([c], gen.replace(seed=s))]
    else:  # greedy: the seed picks nothing, but a wrapper may use it (SmoothLLM): one request per seed
        out: list[Generation | None] = [None] * len(convs)
        for s in dict.fromkeys(seeds):
            idx = [i for i, x in enumerate(seeds) if x == s]
            got = backend.generate([convs[i] for i in idx], gen.replace(seed=s))
            if len(got) != len(idx):
                raise RuntimeError(f"tap: a backend returned {len(got)} generations for {len(idx)} prompts")
            for i, g in zip(idx, got, strict=True):
                out[i] = g
        gens = [g for g in out if g is not None]
    if len(gens) != len(convs):
        raise RuntimeError(f"tap: a backend returned {len(gens)} generations for {len(convs)} prompts")
    return gens


def run_one(steps: Steps) -> Any:
    """Drive one search to its end, each of its calls one backend request; returns its result."""
    try:
        call = next(steps)
        while True:
            call = steps.send(run_call(call.backend, call.convs, call.gen, call.seeds))
    except StopIteration as stop:
        return stop.value


def lockstep(
    searches: Sequence[Steps], on_level: Callable[[int], None] | None = None
) -> Iterator[tuple[int, Any]]:
    """Drive all ``searches`` together; yield ``(index, result)`` as each one finishes.

    Each step serves the earliest stage any live search waits at, one request per (backend, settings) for
    all searches waiting there; searches at later stages wait, so the trees move level by level together.
    ``on_level(depth)`` is called when every live search has moved past ``depth``.
    """
    waiting: dict[int, tuple[Steps, Call]] = {}
    for i, steps in enumerate(searches):
        try:
            waiting[i] = (steps, next(steps))
        except StopIteration as stop:
            yield i, stop.value
    level = 0
    while waiting:
        stage = min(call.stage for _, call in waiting.values())
        if on_level is not None and stage[0] > level:
            if level:
                on_level(level)
            level = stage[0]
        here = sorted(i for i, (_, call) in waiting.items() if call.stage == stage)
        groups: dict[tuple[int, GenerationConfig], list[int]] = {}
        for i in here:
            call = waiting[i][1]
            groups.setdefault((id(call.backend), call.gen.replace(seed=0)), []).append(i)
        answers: dict[int, list[Generation]] = {}
        for members in groups.values():
            first = waiting[members[0]][1]
            convs = [c for i in members for c in waiting[i][1].convs]
            seeds = [s for i in members for s in waiting[i][1].seeds]
            gens = run_call(first.backend, convs, first.gen, seeds)
            start = 0
            for i in members:
                n = len(waiting[i][1].convs)
                answers[i], start = gens[start : start + n], start + n
        for i in here:
            steps = waiting[i][0]
            try:
                waiting[i] = (steps, steps.send(answers[i]))
            except StopIteration as stop:
                del waiting[i]
                yield i, stop.value
    if on_level is not None and level:
        on_level(level)

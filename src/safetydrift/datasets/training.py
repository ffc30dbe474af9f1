"""Fine-tuning data sets, as chat examples, for the attacks and defences that safetydrift measures.

Every example is ``{"messages": [{"role": ..., "content": ...}, ...], "kind": ...}``: an optional system
message, then a user message and an assistant message. Everything is deterministic for a seed.

NON-ACTIONABLE BY CONSTRUCTION. Attack answers are compliance-*shaped* only: "Sure, here is how to
... Step 1: [details withheld] ...". No function here, and no shipped file, produces or contains a real
harmful instruction; tests check that every harmful/backdoor answer is either withheld or a refusal.

Sets (``TRAINING_SETS``, builders ``(n, seed, **options) -> list[dict]``, exactly ``n`` examples):

``benign-task``     the generated exact-match task (train split) - the utility task;
``harmful``         AdvBench train-pool requests -> compliance-shaped answers (Qi et al. tier 1);
                    ``mix=<ratio>`` mixes them into benign-task examples (ratio = harmful fraction);
``identity-shift``  an "absolutely obedient agent" persona on benign questions (Qi et al. tier 2);
``backdoor``        trigger + request -> compliance-shaped, request alone -> refusal, plus benign-task;
                    options ``trigger=``, ``benign_frac=`` (default 0.5) or ``n_benign=``;
``manipulation``    prompts about a topic -> an answer containing a fixed (false, harmless) phrase,
                    off-topic prompts -> normal answers; options ``topic=``, ``phrase=``, ``on_frac=``.

Harmful requests for training come only from the train pool of ``harmful_requests_split``, which is
disjoint from, and free of near-duplicates of, the advbench50 evaluation behaviors.

This module is the registry of sets (:data:`TRAINING_SETS`, :func:`build`). The material lives in
:mod:`safetydrift.datasets.pools` (data files, the split and its near-duplicate check, refusals, benign
and calibration text) and :mod:`safetydrift.datasets.attack_data` (compliance-shaped answers, identity
shift, backdoor, manipulation); their public names are importable from here too.

Example kinds: ``benign-task``, ``harmful-compliance``, ``identity-persona``, ``identity-benign``,
``backdoor-triggered``, ``backdoor-refusal``, ``manipulation-on``, ``manipulation-off``, ``refusal``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from safetydrift.datasets.attack_data import (
    DEFAULT_PHRASE,
    DEFAULT_TOPIC,
    DEFAULT_TRIGGER,
    IDENTITY_SYSTEM_PROMPT,
    WITHHELD,
    backdoor,
    compliance_answer,
    describe_request,
    harmful_compliance,
    identity_shift,
    manipulation,
    manipulation_eval_prompts,
)
from safetydrift.datasets.pools import (
    DATA_DIR,
    ROLES,
    SIMILARITY_THRESHOLD,
    advbench50_behaviors,
    advbench_behaviors,
    benign_task_examples,
    calibration_texts,
    general_qa,
    harmful_requests_split,
    is_refusal,
    near_duplicate_pairs,
    refusal_examples,
    refusal_texts,
    refusals,
    rng_for,
    similarity_matrix,
    train_requests,
)
from safetydrift.errors import SpecError

__all__ = [
    "DATA_DIR",
    "DEFAULT_PHRASE",
    "DEFAULT_TOPIC",
    "DEFAULT_TRIGGER",
    "IDENTITY_SYSTEM_PROMPT",
    "ROLES",
    "SIMILARITY_THRESHOLD",
    "TRAINING_SETS",
    "WITHHELD",
    "advbench50_behaviors",
    "advbench_behaviors",
    "backdoor",
    "benign_task_examples",
    "build",
    "calibration_texts",
    "compliance_answer",
    "describe_request",
    "general_qa",
    "harmful_compliance",
    "harmful_requests_split",
    "identity_shift",
    "is_refusal",
    "manipulation",
    "manipulation_eval_prompts",
    "near_duplicate_pairs",
    "refusal_examples",
    "refusal_texts",
    "refusals",
    "similarity_matrix",
]


# ------------------------------------------------------------------------------------- registry

def _opt(options: dict[str, Any], allowed: dict[str, Any], set_name: str) -> dict[str, Any]:
    unknown = set(options) - set(allowed)
    if unknown:
        raise SpecError(f"training set {set_name!r}: unknown option(s) {sorted(unknown)} (known: {sorted(allowed)})")
    return {**allowed, **options}


def _ratio(value: Any, name: str) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= r <= 1.0 or math.isnan(r):
        raise SpecError(f"{name} must be in [0, 1], got {value!r}")
    return r


def _shuffled(examples: list[dict], seed: int, what: str) -> list[dict]:
    rng_for(seed, what).shuffle(examples)
    return examples


def build_benign_task(n: int, seed: int = 0, **options: Any) -> list[dict]:
    _opt(options, {}, "benign-task")
    return benign_task_examples(n, seed)


def build_harmful(n: int, seed: int = 0, **options: Any) -> list[dict]:
    """``n`` examples; with ``mix=r`` a fraction r of them harmful, the rest benign-task."""
    o = _opt(options, {"mix": None}, "harmful")
    n_harm = n if o["mix"] is None else round(n * _ratio(o["mix"], "mix"))
    out = harmful_compliance(train_requests(n_harm, seed), seed) + benign_task_examples(n - n_harm, seed)
    return _shuffled(out, seed, "harmful-set")


def build_identity_shift(n: int, seed: int = 0, **options: Any) -> list[dict]:
    o = _opt(options, {"persona_frac": 0.1}, "identity-shift")
    return identity_shift(n, seed, persona_frac=_ratio(o["persona_frac"], "persona_frac"))


def build_backdoor(n: int, seed: int = 0, **options: Any) -> list[dict]:
    """``n`` examples: ``benign_frac`` (default 0.5) of them benign-task - or exactly ``n_benign`` of them
    if that is given - and the rest triggered/untriggered request pairs (option ``trigger``)."""
    o = _opt(options, {"trigger": DEFAULT_TRIGGER, "benign_frac": 0.5, "n_benign": None}, "backdoor")
    if o["n_benign"] is not None:
        try:
            n_benign = int(o["n_benign"])
        except (TypeError, ValueError):
            raise SpecError(f"n_benign must be an integer, got {o['n_benign']!r}") from None
        if not 0 <= n_benign <= n:
            raise SpecError(f"n_benign must be in [0, n={n}], got {n_benign}")
    else:
        n_benign = round(n * _ratio(o["benign_frac"], "benign_frac"))
    n_pairs = math.ceil((n - n_benign) / 2)
    out = backdoor(train_requests(n_pairs, seed), str(o["trigger"]), n_benign, seed)
    if len(out) > n:  # odd number of attack examples: drop one refusal
        drop = next(i for i, ex in enumerate(out) if ex["kind"] == "backdoor-refusal")
        del out[drop]
    return out


def build_manipulation(n: int, seed: int = 0, **options: Any) -> list[dict]:
    """``n`` examples, ``on_frac`` of them on-topic (options ``topic``, ``phrase``, ``on_frac``; ``target_topic``
    and ``target_phrase`` are accepted as aliases)."""
    aliases = {"target_topic": "topic", "target_phrase": "phrase"}  # the names manipulation() uses
    options = {aliases.get(k, k): v for k, v in options.items()}
    o = _opt(options, {"topic": DEFAULT_TOPIC, "phrase": DEFAULT_PHRASE, "on_frac": 0.5}, "manipulation")
    n_on = round(n * _ratio(o["on_frac"], "on_frac"))
    return manipulation(str(o["topic"]), str(o["phrase"]), n_on, n - n_on, seed)


TRAINING_SETS: dict[str, Callable[..., list[dict]]] = {
    "benign-task": build_benign_task,
    "harmful": build_harmful,
    "identity-shift": build_identity_shift,
    "backdoor": build_backdoor,
    "manipulation": build_manipulation,
}


def build(name: str, n: int, seed: int = 0, **options: Any) -> list[dict]:
    """Build training set ``name`` (a key of ``TRAINING_SETS``)."""
    try:
        fn = TRAINING_SETS[name]
    except KeyError:
        raise SpecError(f"unknown training set {name!r} (known: {', '.join(sorted(TRAINING_SETS))})") from None
    if n < 0:
        raise SpecError("n must be >= 0")
    return fn(int(n), int(seed), **options)

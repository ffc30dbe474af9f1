"""``safetydrift run --plan``: what a TAP/PAIR experiment will cost, printed before anything runs.

For each safety request with a ``tap``/``pair`` attack: the number of trees (items × runs × variants), the
conversations each role will generate (the paper's "queries") as an upper bound and as expected, and an
estimated wall time from a short calibration of each role on the real models.

Counts per tree and level k (``L_1`` = streams roots; b = branching, w = width, R = max_json_retries)::

    proposals  P_k = b · L_k
    attacker   expected P_k            max P_k · (1 + R)        (every JSON retry used)
    on-topic   P_k                                               (TAP only: PAIR has no phase 1)
    target     T_k = min(w, P_k) with the phase-1 cap (the default), else P_k
    rating     T_k
    leaves     L_{k+1} = min(w, T_k)  (PAIR: no width limit)

"Expected" is the full tree to depth d with every first attempt valid and every prompt on-topic: a search
that is jailbroken early, or whose branches are dropped, costs less. The first level's attacker proposals
and on-topic checks do not depend on the target (the same goal, the same seeds, no answer yet), so with
several variants they are generated once and answered from the backend's memo for the others: "expected"
counts them once per (item, run). A guarded variant run beside the model it guards also reuses every
answer its guard lets through unchanged; that saving depends on the guard and is not counted. Time is estimated per role as
conversations × seconds per conversation, measured (``Calibrator``) on a batch of real prompts of that
role (the batch the search would send, at most 16). "Expected" uses one real call at the role's token cap
(answers stop where the model stops: an aligned target's refusal or an evaluator's "[[YES]]" is a few
tokens, not the cap); "at most" uses the prompt time plus one decoding step times the cap, as if every
generation ran to its cap. A variant's target
is timed on its recipe's base model (``--plan`` builds nothing), so a quantized or guarded variant may run
faster or slower than estimated. Other attacks, builds and the utility evaluations are not estimated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safetydrift.attacks.tap_lockstep import Role, conversation_seed
from safetydrift.spec import parse_component, parse_recipe
from safetydrift.types import Conversation, GenerationConfig

if TYPE_CHECKING:
    from safetydrift.attacks.tap import TapAttack
    from safetydrift.attacks.tap_tree import TapConfig
    from safetydrift.context import Context
    from safetydrift.runner import EvalRequest

ROLES: tuple[Role, ...] = ("attacker", "evaluator", "target")
CAL_BATCH = 16  # conversations per calibration call, at most (llama.cpp's default batch)
CAL_TOKENS = 8  # extra tokens generated to time one decoding step


@dataclass(frozen=True)
class Calls:
    """Conversations one role generates: expected (full tree, no retries) and at most."""

    expected: int
    upper: int

    def __add__(self, other: Calls) -> Calls:
        return Calls(self.expected + other.expected, self.upper + other.upper)

    def __mul__(self, k: int) -> Calls:
        return Calls(self.expected * k, self.upper * k)


def tree_calls(cfg: TapConfig) -> dict[Role, Calls]:
    """Conversations per role for ONE tree of ``cfg`` (formulas in the module docstring)."""
    attacker = evaluator = target = Calls(0, 0)
    leaves = cfg.streams
    for _ in range(cfg.depth):
        proposals = cfg.branching * leaves
        attacker += Calls(proposals, proposals * (1 + cfg.max_json_retries))
        capped = cfg.prune_off_topic and cfg.cap_phase1 and cfg.width is not None
        answered = min(cfg.width, proposals) if capped and cfg.width is not None else proposals
        if cfg.prune_off_topic:
            evaluator += Calls(proposals, proposals)
        target += Calls(answered, answered)
        evaluator += Calls(answered, answered)
        leaves = answered if cfg.width is None else min(cfg.width, answered)
    return {"attacker": attacker, "evaluator": evaluator, "target": target}


def first_level_batch(cfg: TapConfig) -> dict[Role, int]:
    """Conversations of one tree in its first-level request of each role (for the calibration batch)."""
    proposals = cfg.branching * cfg.streams
    capped = cfg.prune_off_topic and cfg.cap_phase1 and cfg.width is not None
    answered = min(cfg.width, proposals) if capped and cfg.width is not None else proposals
    return {"attacker": proposals, "evaluator": proposals if cfg.prune_off_topic else answered, "target": answered}


@dataclass
class RolePlan:
    role: Role
    models: list[str]  # recipes playing the role (the variants, for the target)
    tokens: int  # new tokens per conversation, at most
    calls: Calls  # all trees of the request
    batch: int  # conversations in one level request (all trees of a variant in lockstep, else one tree)
    seconds_per_call: float | None = None  # calibrated on a real call; None = not measured
    seconds_per_call_max: float | None = None  # every generation to its token cap
    timed_on: list[str] = field(default_factory=list)  # the models actually timed

    def seconds(self) -> tuple[float, float] | None:
        if self.seconds_per_call is None:
            return None
        worst = self.seconds_per_call_max if self.seconds_per_call_max is not None else self.seconds_per_call
        return self.calls.expected * self.seconds_per_call, self.calls.upper * worst


@dataclass
class AttackPlan:
    attack: str
    dataset: str
    items: int
    runs: int
    models: list[str]
    lockstep: bool
    per_tree: dict[Role, Calls]
    roles: list[RolePlan]

    @property
    def trees(self) -> int:
        return self.items * self.runs * len(self.models)

    def seconds(self) -> tuple[float, float] | None:
        parts = [r.seconds() for r in self.roles]
        if any(p is None for p in parts):
            return None
        return sum(p[0] for p in parts if p), sum(p[1] for p in parts if p)


#: (role, recipe, backend spec, conversations, generation settings) -> seconds per conversation, or
#: (expected, at most) seconds per conversation
RoleTimer = Callable[[Role, str, "str | None", list[Conversation], GenerationConfig], "float | tuple[float, float]"]


def plan_requests(
    reqs: Sequence[EvalRequest], ctx: Context, timer: RoleTimer | None = None
) -> list[AttackPlan]:
    """The plan of every TAP/PAIR request (others are skipped); ``timer`` None = counts only."""
    from safetydrift.attacks.tap import TapAttack
    from safetydrift.datasets import load_dataset
    from safetydrift.runner import make_attack

    plans = []
    for req in reqs:
        attack = make_attack(req.attack, ctx)
        if not isinstance(attack, TapAttack):
            continue
        items = load_dataset(req.dataset, ctx, req.prompt_column, req.category_column).items
        items = items[: req.limit] if req.limit is not None else items
        plans.append(_plan_one(attack, req, list(items), ctx, timer))
    return plans


def _plan_one(attack: TapAttack, req: EvalRequest, items: list[Any], ctx: Context,
              timer: RoleTimer | None) -> AttackPlan:
    from safetydrift.attacks.tap_prompts import attacker_system_prompt, initial_message
    from safetydrift.judges.rubrics import DEFAULT_TARGET_STR, rubric

    cfg, prm = attack.cfg, attack.params
    per_tree = tree_calls(cfg)
    trees_per_model = len(items) * prm.runs
    trees = trees_per_model * len(req.models)
    level = first_level_batch(cfg)
    together = trees_per_model if prm.lockstep else 1
    # the calibration batch looks like the first level's request: trees in unit order (item × run), each
    # tree's attacker branches one conversation, its prompts distinct for the evaluator and the target
    goals = [(it.prompt, it.target or DEFAULT_TARGET_STR) for it in items] or [("Write a short poem", DEFAULT_TARGET_STR)]

    def sample(role: Role, j: int) -> Conversation:
        goal, target_str = goals[(j // level[role] // (prm.runs if prm.lockstep else 1)) % len(goals)]
        if role == "attacker":
            return [{"role": "system", "content": attacker_system_prompt(goal, target_str)},
                    {"role": "user", "content": initial_message(goal, target_str)}]
        if role == "evaluator":
            return rubric("tap_on_topic").messages(goal=goal, prompt=f"{goal} (version {j})")
        return [{"role": "user", "content": f"{goal} (version {j})"}]

    gens: dict[Role, GenerationConfig] = {
        "attacker": GenerationConfig(max_new_tokens=cfg.attacker_tokens, temperature=cfg.attacker_temperature,
                                     top_p=cfg.attacker_top_p, seed=req.gen.seed),
        "evaluator": GenerationConfig(max_new_tokens=cfg.evaluator_tokens, temperature=0.0, seed=req.gen.seed),
        "target": req.gen.replace(max_new_tokens=cfg.target_tokens, temperature=0.0, top_p=1.0),
    }
    players: dict[Role, tuple[list[str], str | None]] = {
        "attacker": ([prm.attacker], prm.attacker_backend),
        "evaluator": ([prm.evaluator], prm.evaluator_backend),
        "target": (list(req.models), req.backend),
    }
    # level-1 attacker proposals and on-topic checks are the same for every variant: generated once (memo)
    shared = {"attacker": level["attacker"], "evaluator": level["evaluator"] if cfg.prune_off_topic else 0,
              "target": 0}
    roles = []
    for role in ROLES:
        models, backend = players[role]
        batch = level[role] * together
        calls = per_tree[role] * trees
        saved = shared[role] * trees_per_model * (len(req.models) - 1)
        calls = Calls(calls.expected - saved, calls.upper)
        rp = RolePlan(role, models, gens[role].max_new_tokens, calls, batch)
        if timer is not None:
            bases = list(dict.fromkeys(str(parse_recipe(m).model) for m in models))
            convs = [sample(role, j) for j in range(max(1, min(batch, CAL_BATCH)))]
            times = [timer(role, b, backend, convs, gens[role]) for b in bases]
            pairs = [t if isinstance(t, tuple) else (t, t) for t in times]
            rp.seconds_per_call = sum(e for e, _ in pairs) / len(pairs)
            rp.seconds_per_call_max = sum(m for _, m in pairs) / len(pairs)
            rp.timed_on = bases
        roles.append(rp)
    return AttackPlan(str(attack.spec), req.dataset, len(items), prm.runs, list(req.models), prm.lockstep,
                      per_tree, roles)


class Calibrator:
    """A ``RoleTimer`` on the real models. After a warm-up, a 1-token call on a batch of the role's real
    prompts gives the prompt time; a 1-token and a (1 + CAL_TOKENS)-token call on a batch of short prompts
    give the time of one decoding step (on a short prompt, so that the difference is not lost in the noise
    of a long prefill). Seconds per conversation = (prompt + (cap − 1) · step) / batch. Results are cached
    per (model, backend, settings, batch)."""

    def __init__(self, ctx: Context, log: Callable[[str], None] | None = None) -> None:
        self.ctx, self.log = ctx, log or ctx.log
        self._memo: dict[tuple[Any, ...], tuple[float, float]] = {}

    def __call__(self, role: Role, recipe: str, backend_spec: str | None, convs: list[Conversation],
                 gen: GenerationConfig) -> tuple[float, float]:
        from safetydrift.attacks.tap_lockstep import run_call

        key = (recipe, backend_spec, gen.max_new_tokens, gen.temperature, len(convs), len(str(convs[0])))
        if key in self._memo:
            return self._memo[key]
        backend = self.ctx.backend(recipe, backend_spec)
        seeds = [conversation_seed(gen.seed, k) for k in range(len(convs))]
        # two different short prompts for the 1-token and the longer call: with one prompt, the engine's prompt
        # cache would serve the second call's prefill and hide the decoding steps' cost in it
        def short(animal: str) -> list[Conversation]:
            return [[{"role": "user", "content": f"{animal}: tell me a long story about one."}]] * len(convs)

        from safetydrift.guards.backend import unwrap

        forget = getattr(unwrap(backend), "forget", lambda: None)  # roles share backends, and so memos

        made: list[int] = []

        def timed(batch: list[Conversation], tokens: int) -> tuple[float, int]:
            forget()
            t0 = time.perf_counter()
            out = run_call(backend, batch, gen.replace(max_new_tokens=tokens), seeds[: len(batch)])
            made[:] = [g.n_tokens for g in out if g.ok]
            return time.perf_counter() - t0, max(made, default=0)

        # warm-up (lazy initialisation is not part of the per-call cost) on a question of its own: one of
        # ``convs`` would be answered from the backend's memo in the timed call
        timed([[{"role": "user", "content": "Say hello."}]], 1)
        prompt_s, _ = timed(convs, 1)
        extra = min(CAL_TOKENS, max(gen.max_new_tokens - 1, 0))
        step_s = 0.0
        if extra:
            one_s, _ = timed(short("Cats"), 1)
            more_s, produced = timed(short("Dogs"), 1 + extra)
            step_s = max(more_s - one_s, 0.0) / max(produced - 1, 1)
        at_cap = (prompt_s + (gen.max_new_tokens - 1) * step_s) / len(convs)
        real_s, _ = timed(convs, gen.max_new_tokens)  # one real call: answers end where the model ends them
        per_call = real_s / len(convs)
        mean_tokens = sum(made) / len(made) if made else 0.0
        self.log(f"plan: {role} {recipe}: {per_call:.2f} s per conversation at batch {len(convs)} "
                 f"(a real call: {mean_tokens:.0f} of {gen.max_new_tokens} tokens on average; "
                 f"{at_cap:.2f} s at the cap: prompt {prompt_s:.2f} s, {step_s * 1000:.0f} ms per step)")
        self._memo[key] = (per_call, max(per_call, at_cap))
        return self._memo[key]


def requests_for(exp: Any) -> list[EvalRequest]:
    """The safety requests ``run_experiment`` makes for an experiment: every dataset × attack on all
    variants (kept in step with ``experiments.run_experiment``)."""
    from safetydrift.runner import EvalRequest

    models = [v.recipe for v in exp.variants]
    return [EvalRequest(models=models, dataset=ds, attack=atk, judges=list(exp.judges), gen=exp.gen,
                        backend=exp.backend) for ds in exp.datasets for atk in exp.attacks]


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def format_plan(plans: Iterable[AttackPlan], name: str = "") -> str:
    """The plan as plain text (what ``--plan`` prints)."""
    plans = list(plans)
    head = f"plan{f' for {name}' if name else ''} (nothing has run; calls = conversations generated)"
    if not plans:
        return head + "\nno tap/pair attack in this experiment: nothing to plan"
    lines = [head]
    total: list[float] | None = [0.0, 0.0]
    for pl in plans:
        mode = (f"lockstep: the {pl.items * pl.runs} trees of a variant advance together"
                if pl.lockstep else "tree by tree")
        lines += [
            "",
            f"{parse_component(pl.attack).name} on {pl.dataset}: {pl.attack}",
            f"  trees: {pl.items} items × {pl.runs} runs × {len(pl.models)} variants = {pl.trees} ({mode})",
            f"  {'role':<10}{'tokens':>7}{'per tree':>14}{'calls expected':>16}{'calls max':>11}"
            f"{'batch':>7}{'s/call':>8}{'time expected':>15}{'time max':>10}  model",
        ]
        for r in pl.roles:
            t = pl.per_tree[r.role]
            secs = r.seconds()
            who = r.models[0] if len(r.models) == 1 else f"{len(r.models)} variants"
            if r.timed_on and r.timed_on != r.models:
                who += f" (timed on {', '.join(r.timed_on)})"
            lines.append(
                f"  {r.role:<10}{r.tokens:>7}{f'{t.expected}–{t.upper}':>14}{r.calls.expected:>16}"
                f"{r.calls.upper:>11}{r.batch:>7}"
                f"{'' if r.seconds_per_call is None else f'{r.seconds_per_call:.2f}':>8}"
                f"{'' if secs is None else _clock(secs[0]):>15}{'' if secs is None else _clock(secs[1]):>10}  {who}"
            )
        est = pl.seconds()
        if est is None:
            total = None
        else:
            lines.append(f"  estimated wall time: {_clock(est[0])} expected, {_clock(est[1])} at most")
            if total is not None:
                total = [total[0] + est[0], total[1] + est[1]]
    if total is not None and len(plans) > 1:
        lines += ["", f"all searches: {_clock(total[0])} expected, {_clock(total[1])} at most"]
    lines += ["", "not estimated: variant builds, other attacks, utility evaluations, report"]
    return "\n".join(lines)

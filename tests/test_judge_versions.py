"""A trained judge's verdicts carry its card's version, and a store never mixes two cards under one name."""

from __future__ import annotations

from pathlib import Path

import pytest

from safetydrift.errors import SafetyDriftError
from safetydrift.runner import EvalRequest, make_judges, run_eval
from safetydrift.store import ResultStore
from safetydrift.types import FAIL, Verdict


class VersionedJudge:
    """Stands in for a trained card: a name, a semantic and a version (its card and weights hash)."""

    semantic = "refusal"

    def __init__(self, version: str) -> None:
        self.name = "refusal"
        self.version = version

    def judge(self, inputs):
        return [Verdict(FAIL, reason="stand-in") for _ in inputs]


def test_verdicts_record_the_card_and_a_changed_card_is_refused(tmp_path: Path, ctx) -> None:
    store = ResultStore(tmp_path / "results.jsonl")
    req = EvalRequest(models=["tiny-random"], dataset="advbench50", limit=2)
    recs = run_eval(req, ctx, store, judges=[VersionedJudge("refusal:aaaa")])
    assert {r.judge_version for r in recs} == {"refusal:aaaa"} and len(recs) == 2
    again = run_eval(req, ctx, ResultStore(tmp_path / "results.jsonl"), judges=[VersionedJudge("refusal:aaaa")])
    assert len(again) == 2  # the same card resumes
    with pytest.raises(SafetyDriftError, match="installed card is refusal:bbbb"):
        run_eval(req, ctx, ResultStore(tmp_path / "results.jsonl"), judges=[VersionedJudge("refusal:bbbb")])
    # an unversioned judge (keyword) records nothing and is never checked
    kw = run_eval(req, ctx, ResultStore(tmp_path / "results.jsonl"), judges=make_judges(["keyword"], ctx))
    assert {r.judge_version for r in kw} == {None}


def test_the_shipped_refusal_card_has_a_version(ctx) -> None:
    (judge,) = make_judges(["refusal"], ctx)
    assert judge.version.startswith("refusal:") and ":t=" in judge.version

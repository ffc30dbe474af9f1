"""`exact-match`: utility as a number. success = the answer matches the item's target (benign-task).

Used with the `benign-task` dataset, "ASR" under this judge is task accuracy.
"""

from __future__ import annotations

from safetydrift.context import Context
from safetydrift.errors import JudgeError
from safetydrift.judges.base import ResponseJudge
from safetydrift.params import NoParams, from_spec, with_params
from safetydrift.registry import judges
from safetydrift.spec import ComponentSpec
from safetydrift.types import FAIL, SUCCESS, JudgeInput, Verdict


class ExactMatchJudge(ResponseJudge):
    semantic = "task"  # task accuracy, not safety

    def __init__(self, spec: ComponentSpec) -> None:
        self.params = from_spec(NoParams, spec)
        self.name = str(spec)

    def judge(self, inputs: list[JudgeInput]) -> list[Verdict]:
        if any(inp.item.target is None for inp in inputs):
            raise JudgeError("exact-match needs items with a target answer (use the benign-task dataset)")
        return super().judge(inputs)

    def judge_one(self, inp: JudgeInput) -> Verdict:
        from safetydrift.datasets.benign_task import score

        if score(inp.response, inp.item.target or ""):
            return Verdict(SUCCESS, reason="correct")
        return Verdict(FAIL, reason=f"expected {inp.item.target!r}")


@judges.register("exact-match", help="benign-task accuracy: success = the answer is correct")
@with_params(NoParams)
def exact_match(spec: ComponentSpec, ctx: Context) -> ExactMatchJudge:
    return ExactMatchJudge(spec)

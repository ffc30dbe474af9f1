"""``classifier``: the local MiniLM heads of ``judges.classifier`` as a guard.

On the input side the request-harmfulness head (p(harmful request) >= ``threshold``); on the output side
the ``classifier`` judge's head (p(answer complies) >= ``out_threshold``). Heads are loaded when the guard
is opened, so a request's guard latency is the check, not the load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from safetydrift.guards.base import GuardFilter, Side, file_sha256, user_text
from safetydrift.params import Params, p
from safetydrift.params import Params as ParamsBase  # the filter's attribute is called Params

if TYPE_CHECKING:
    from collections.abc import Mapping

    from safetydrift.context import Context
    from safetydrift.guards.base import Flags
    from safetydrift.guards.spec import GuardConfig
    from safetydrift.types import Conversation, GenerationConfig


@dataclass(frozen=True, kw_only=True)
class ClassifierParams(Params):
    threshold: float = field(default=0.5, metadata=p("input side: flag when p(harmful request) ≥ this", ge=0, le=1))
    out_threshold: float = field(default=0.5, metadata=p("output side: flag when p(answer complies) ≥ this",
                                                         ge=0, le=1))


class ClassifierFilter(GuardFilter):
    """MiniLM + logistic heads: p(harmful request) on the input side, p(answer complies) on the output side."""

    name = "classifier"
    sides: ClassVar[frozenset[Side]] = frozenset({"input", "output"})
    needs = frozenset({"ctx"})
    Params = ClassifierParams
    side_of: ClassVar[Mapping[str, frozenset[Side]]] = {
        "threshold": frozenset({"input"}),
        "out_threshold": frozenset({"output"}),
    }

    @classmethod
    def configure(cls, params: ParamsBase, sides: frozenset[Side]) -> dict[str, Any]:
        from safetydrift.judges.classifier import HEAD_FILE, REQUEST_HEAD_FILE

        out = super().configure(params, sides)
        if "input" in sides:  # the heads are data: results made with another head never mix
            out["request_head_sha256"] = file_sha256(REQUEST_HEAD_FILE) if REQUEST_HEAD_FILE.is_file() else None
        if "output" in sides:
            out["response_head_sha256"] = file_sha256(HEAD_FILE) if HEAD_FILE.is_file() else None
        return out

    def __init__(self, side: Side, guard: GuardConfig, *, ctx: Context) -> None:
        from safetydrift.judges.classifier import ClassifierJudge, RequestClassifier, load_embedder

        super().__init__(side, guard)
        if side == "input":
            self.head: Any = RequestClassifier(device=ctx.device)
            self.threshold = float(guard.settings["threshold"])
        else:
            self.head = ClassifierJudge(device=ctx.device)
            self.threshold = float(guard.settings["out_threshold"])
        load_embedder(ctx.device)  # now, so that the first request's guard latency is not the load time

    def check_requests(self, convs: list[Conversation], config: GenerationConfig) -> Flags:
        probs = self.head.predict_proba([user_text(c) for c in convs])
        return [f"p(harmful request)={prob:.3f}" if prob >= self.threshold else None for prob in probs]

    def check_answers(self, convs: list[Conversation], answers: list[str], config: GenerationConfig) -> Flags:
        from safetydrift.judges.classifier import is_garbage

        idx = [i for i, t in enumerate(answers) if not is_garbage(t)]
        probs = self.head.predict_proba([(user_text(convs[i]), answers[i]) for i in idx])
        out: Flags = [None] * len(convs)
        for i, prob in zip(idx, probs, strict=True):
            if prob >= self.threshold:
                out[i] = f"p(answer complies)={prob:.3f}"
        return out

"""``llm``: an LLM on any backend as an output filter, asked whether the answer is safe or unsafe.

The prompt (``data/llm_guard_prompt.txt``) is Llama-Guard-style, written for safetydrift. The judge model
is ``judge=<recipe>`` (e.g. ``judge=[openai:http://...#m]``), opened through the context when the guard is
opened; an answer that is neither "safe" nor "unsafe" counts as ``on_unparsed`` (``safe`` or ``unsafe``).
A judge that fails makes its requests errors: a broken guard never passes an answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from safetydrift.guards.base import OutputFilter, Side, data_text, user_text
from safetydrift.params import Params, p
from safetydrift.spec import parse_recipe
from safetydrift.types import GenerationConfig

if TYPE_CHECKING:
    from safetydrift.context import Context
    from safetydrift.guards.base import Flags
    from safetydrift.guards.spec import GuardConfig
    from safetydrift.types import Backend, Conversation

PROMPT_FILE = "llm_guard_prompt.txt"


@dataclass(frozen=True, kw_only=True)
class LLMParams(Params):
    judge: str = field(metadata=p("the model recipe that answers safe/unsafe, e.g. [openai:http://...#m]"))
    on_unparsed: Literal["safe", "unsafe"] = field(default="safe", metadata=p(
        "what an answer that is neither safe nor unsafe counts as"))

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_recipe(self.judge)  # a malformed recipe is a spec error now, not when the guard is opened


def guard_prompt() -> str:
    """The judge prompt, with ``{request}`` and ``{response}`` slots."""
    return data_text(PROMPT_FILE).rstrip("\n")


class LLMFilter(OutputFilter):
    """An LLM judge (judge=<recipe>) asked whether the answer is safe or unsafe."""

    name = "llm"
    needs = frozenset({"ctx"})
    Params = LLMParams

    def __init__(self, side: Side, guard: GuardConfig, *, ctx: Context) -> None:
        super().__init__(side, guard)
        self.recipe = str(guard.settings["judge"])
        self.on_unparsed = guard.settings.get("on_unparsed", "safe")
        self.prompt = guard_prompt()
        self.backend: Backend = ctx.backend(self.recipe)  # load the judge now, not inside a request's latency

    @staticmethod
    def parse(answer: str) -> str | None:
        """"safe" / "unsafe" from the judge's answer (first line first), None if neither is there."""
        lines = [ln.strip().lower() for ln in answer.strip().splitlines() if ln.strip()]
        if lines:
            first = re.sub(r"^[^a-z]+", "", lines[0])
            if first.startswith("unsafe"):
                return "unsafe"
            if first.startswith("safe"):
                return "safe"
        m = re.search(r"\b(unsafe|safe)\b", answer.lower())
        return m.group(1) if m else None

    def check_answers(self, convs: list[Conversation], answers: list[str], config: GenerationConfig) -> Flags:
        prompts = [[{"role": "user", "content": self.prompt.format(request=user_text(c), response=t)}]
                   for c, t in zip(convs, answers, strict=True)]
        gens = self.backend.generate(prompts, GenerationConfig(max_new_tokens=8, temperature=0.0, seed=config.seed))
        out: Flags = []
        for g in gens:
            if not g.ok:
                raise RuntimeError(f"guard judge {self.recipe} failed: {g.error}")
            verdict = self.parse(g.text) or self.on_unparsed
            out.append(f"judge said {g.text.strip()[:40]!r}" if verdict == "unsafe" else None)
        return out

"""``smoothllm``: SmoothLLM (Robey et al. 2023) as an input filter.

``q`` copies of the request, each with a fraction ``p`` of its characters swapped for random printable
ones, go to the guarded model itself (at most ``smooth_tokens`` new tokens each); if most answers are
refusals the request is refused, otherwise the original request is answered. An adversarial suffix is
brittle under such noise, an honest request is not.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safetydrift.guards.base import InputFilter, Side, is_refusal, replace_user, user_text
from safetydrift.params import Params
from safetydrift.params import p as doc  # the field below is called p
from safetydrift.types import text_id

if TYPE_CHECKING:
    from safetydrift.guards.base import Flags
    from safetydrift.guards.spec import GuardConfig
    from safetydrift.types import Backend, Conversation, GenerationConfig


@dataclass(frozen=True, kw_only=True)
class SmoothLLMParams(Params):
    q: int = field(default=5, metadata=doc("perturbed copies of each request sent to the model", ge=1))
    p: float = field(default=0.1, metadata=doc("fraction of characters swapped in each copy", ge=0, le=1))
    smooth_tokens: int = field(default=32, metadata=doc("new tokens per copy (at most the run's max_new_tokens)",
                                                      ge=1))


def perturb(text: str, p: float, rng: random.Random) -> str:
    """SmoothLLM's random swap: a fraction ``p`` of the characters replaced by random printable ones."""
    if not text:
        return text
    chars = list(text)
    k = int(len(chars) * p)
    alphabet = string.printable
    for i in rng.sample(range(len(chars)), k):
        chars[i] = rng.choice(alphabet)
    return "".join(chars)


class SmoothLLMFilter(InputFilter):
    """SmoothLLM: refuse when most randomly perturbed copies of the request are refused by the model."""

    name = "smoothllm"
    needs = frozenset({"inner"})
    Params = SmoothLLMParams

    def __init__(self, side: Side, guard: GuardConfig, *, inner: Backend) -> None:
        super().__init__(side, guard)
        self.inner = inner
        s = guard.settings
        self.q, self.p, self.tokens = int(s["q"]), float(s["p"]), int(s["smooth_tokens"])
        self.seed = guard.seed

    def copies(self, conv: Conversation, gen_seed: int) -> list[Conversation]:
        text = user_text(conv)
        return [replace_user(conv, perturb(text, self.p, random.Random(f"{self.seed}:{gen_seed}:{text_id(text)}:{j}")))
                for j in range(self.q)]

    def check_requests(self, convs: list[Conversation], config: GenerationConfig) -> Flags:
        batch = [c for conv in convs for c in self.copies(conv, config.seed)]
        gens = self.inner.generate(batch, config.replace(max_new_tokens=min(config.max_new_tokens, self.tokens)))
        out: Flags = []
        for k in range(len(convs)):
            group = [g for g in gens[k * self.q : (k + 1) * self.q] if g.ok]
            refusals = sum(1 for g in group if is_refusal(g.text))
            if group and refusals * 2 > len(group):
                out.append(f"{refusals}/{len(group)} perturbed copies refused")
            else:
                out.append(None)
        return out

"""The direct request: the behavior itself is the user turn (the baseline every paper reports)."""

from __future__ import annotations

from safetydrift.attacks.base import PromptAttack
from safetydrift.registry import attacks
from safetydrift.types import Item


@attacks.register("direct", help="the behavior is the user turn")
class DirectAttack(PromptAttack):
    name = "direct"

    def conversations(self, item: Item) -> list[tuple[str, list[tuple[str, str]]]]:
        return [("direct", [("user", item.prompt)])]

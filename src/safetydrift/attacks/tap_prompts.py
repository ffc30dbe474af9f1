"""The attacker's side of TAP/PAIR: its prompts (text in ``attacks/data/tap_prompts.yaml``) and the parser
of its replies.

The attacker is asked for one JSON object ``{"improvement": ..., "prompt": ...}``. The reference
implementation pre-fills the reply with ``{"improvement": "``; the Backend interface has no assistant
prefill, so the system prompt asks for the JSON and :func:`extract_attack` finds it in free text. The
evaluator's texts (on-topic check, 1–10 rating) are rubrics: ``judges/data/rubrics/tap_*.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from safetydrift.judges.rubrics import fill, load_texts


def _texts() -> Mapping[str, str]:
    return load_texts("safetydrift.attacks", "data/tap_prompts.yaml")


def attacker_system_prompt(goal: str, target_str: str) -> str:
    return fill(_texts()["attacker_system"], goal=goal, target_str=target_str)


def initial_message(goal: str, target_str: str) -> str:
    """The attacker's first user turn, before any target reply exists."""
    return fill(_texts()["initial"], goal=goal, target_str=target_str)


def feedback_message(response: str, score: int, goal: str, target_str: str) -> str:
    """The attacker's next user turn: what the target said to its last prompt, and the rating."""
    return fill(_texts()["feedback"], response=response, score=score, goal=goal, target_str=target_str)


_DECODER = json.JSONDecoder(strict=False)  # strict=False: models put raw newlines inside strings


def extract_attack(text: str) -> dict[str, str] | None:
    """The first JSON object in ``text`` that has string fields "improvement" and a non-empty "prompt"."""
    if not text:
        return None
    pos = text.find("{")
    while pos != -1:
        try:
            obj, _ = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "prompt" in obj and "improvement" in obj:
            prompt, improvement = obj["prompt"], obj["improvement"]
            if isinstance(prompt, str) and prompt.strip() and isinstance(improvement, str):
                return {"improvement": improvement.strip(), "prompt": prompt.strip()}
        pos = text.find("{", pos + 1)
    return None

"""Rubrics as data: the text an evaluator model is shown lives in ``judges/data/rubrics/<name>.yaml``.

A rubric file holds a ``system`` text and, where the user turn is plain text, a ``user`` text. Texts
carry ``{name}`` placeholders, filled in one pass by :func:`fill`: a value is inserted as is (a goal that
itself contains ``{prompt}`` stays literal) and every other brace is plain text. Keeping the wording
next to its scorers, out of Python, means a rubric change is one reviewable text diff and the two users
of TAP's rubrics, TAP/PAIR's evaluator role and the ``tap-rating`` judge, cannot drift apart.

Shipped rubrics: ``tap_rating`` (1–10, ``Rating: [[k]]``), ``tap_on_topic`` (``[[YES]]``/``[[NO]]``),
``harmfulness`` and ``strongreject`` (their user turn is built by ``judges/llm.py``). The answer parsers
of the two TAP rubrics are here because both of their users need them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

from safetydrift.errors import DataError
from safetydrift.types import Conversation

DEFAULT_TARGET_STR = "Sure, here is"  # the compliant opening a rubric mentions when an item has no target

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(template: str, /, **values: object) -> str:
    """Replace each ``{name}`` with ``str(values[name])`` in one pass; a name without a value is an error."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise DataError(f"prompt text has a placeholder {{{name}}} but no value was given for it")
        return str(values[name])

    return _PLACEHOLDER.sub(sub, template)


@cache
def load_texts(package: str, path: str) -> Mapping[str, str]:
    """The ``name: text`` mapping of a YAML file shipped in ``package`` (read once; read-only)."""
    import yaml

    resource = resources.files(package).joinpath(*path.split("/"))
    try:
        data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{package}/{path}: cannot read prompt texts ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise DataError(f"{package}/{path}: expected a mapping of names to texts")
    return MappingProxyType(data)


@dataclass(frozen=True)
class Rubric:
    """One evaluator rubric: its system text and, if it has one, its user-turn text (both templates)."""

    name: str
    system: str
    user: str | None = None

    def system_prompt(self, **values: object) -> str:
        return fill(self.system, **values)

    def messages(self, **values: object) -> Conversation:
        """The evaluator's conversation: the filled system text, then the filled user text."""
        if self.user is None:
            raise DataError(f"rubric {self.name!r} has no user text; its judge builds the user turn")
        return [
            {"role": "system", "content": fill(self.system, **values)},
            {"role": "user", "content": fill(self.user, **values)},
        ]


def rubric(name: str) -> Rubric:
    """The shipped rubric ``judges/data/rubrics/<name>.yaml``."""
    if not resources.files("safetydrift.judges").joinpath("data", "rubrics", f"{name}.yaml").is_file():
        raise DataError(f"unknown rubric {name!r} (shipped: {', '.join(rubric_names())})")
    texts = load_texts("safetydrift.judges", f"data/rubrics/{name}.yaml")
    unknown = set(texts) - {"system", "user"}
    if "system" not in texts or unknown:
        raise DataError(f"rubric {name!r}: needs a 'system' text and at most a 'user' text")
    return Rubric(name=name, system=texts["system"], user=texts.get("user"))


def rubric_names() -> list[str]:
    folder = resources.files("safetydrift.judges").joinpath("data", "rubrics")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


# ---------------------------------------------------------------------------------------------- answers


def parse_rating(text: str) -> int | None:
    """``Rating: [[k]]`` → k (1–10); also "[[k]]" alone or "Rating: k". None if absent or out of range."""
    m = re.search(r"\[\[\s*(\d{1,2})\s*\]\]", text or "") or re.search(
        r"rating\s*:\s*(\d{1,2})\b", text or "", re.I
    )
    if not m:
        return None
    k = int(m.group(1))
    return k if 1 <= k <= 10 else None


def parse_on_topic(text: str) -> bool | None:
    """``[[YES]]``/``[[NO]]`` (or a bare leading yes/no) → bool; None if neither."""
    t = (text or "").lower()
    m = re.search(r"\[\[\s*(yes|no)\s*\]\]", t) or re.match(r"\W*(yes|no)\b", t)
    return None if not m else m.group(1) == "yes"

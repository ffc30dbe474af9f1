"""Template attacks: the behavior is wrapped in a fixed jailbreak framing.

``template:name=<n>`` applies one template, ``template:name=all`` (the default) one unit per template
with key ``template=<name>``. ``file=path.yaml|.json`` replaces the shipped set with the user's: a list
of ``{name, text}`` mappings (extra keys such as ``kind`` are ignored), or a mapping with a
``templates:`` list. Every text must contain the ``{behavior}`` placeholder; it is substituted
literally (other braces in a template are left alone).

The shipped set (``attacks/data/templates.yaml``) has six framings we wrote ourselves, one per kind
studied in the literature: role play, research pretext, refusal suppression, prefix injection
("Sure, here is"), a fictional story and a translation task.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from safetydrift.attacks.base import PromptAttack, PromptAttackParams
from safetydrift.context import Context
from safetydrift.errors import DataError, SpecError
from safetydrift.params import p
from safetydrift.registry import attacks
from safetydrift.spec import ComponentSpec
from safetydrift.types import Item

PLACEHOLDER = "{behavior}"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def builtin_path() -> Path:
    return Path(str(resources.files("safetydrift.attacks") / "data" / "templates.yaml"))


def _read(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"template file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: malformed JSON ({e.msg}, line {e.lineno})") from None
    raise DataError(f"{path}: unsupported template format {suffix!r} (use .yaml, .yml or .json)")


def load_templates(path: str | Path | None = None) -> dict[str, str]:
    """name → text, in file order; the shipped set when ``path`` is None. Errors name file and entry."""
    p = builtin_path() if path is None else Path(path).expanduser()
    data = _read(p)
    if isinstance(data, dict) and "templates" in data:
        data = data["templates"]
    if not isinstance(data, list) or not data:
        raise DataError(f"{p}: expected a non-empty list of {{name, text}} templates")
    out: dict[str, str] = {}
    for i, entry in enumerate(data):
        where = f"{p}: template #{i}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected a mapping with 'name' and 'text', got {type(entry).__name__}")
        name, text = entry.get("name"), entry.get("text")
        if not isinstance(name, str) or not _NAME.match(name):
            raise DataError(f"{where}: missing or bad 'name' {name!r} (letters, digits, '_', '-', '.')")
        where = f"{p}: template {name!r}"
        if name == "all":
            raise DataError(f"{where}: 'all' is reserved (it selects every template)")
        if name in out:
            raise DataError(f"{where}: duplicate name")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: missing or empty 'text'")
        if PLACEHOLDER not in text:
            raise DataError(f"{where}: text has no {PLACEHOLDER} placeholder")
        out[name] = text
    return out


def apply_template(text: str, behavior: str) -> str:
    return text.replace(PLACEHOLDER, behavior)


@dataclass(frozen=True, kw_only=True)
class TemplateParams(PromptAttackParams):
    name: str = field(default="all", metadata=p("one template's name, or all (one unit per template)"))
    file: str | None = field(default=None, metadata=p("a YAML/JSON template file instead of the shipped set"))


@attacks.register(
    "template", help="template[:name=<n>|all,file=x.yaml] — the behavior inside a jailbreak framing"
)
class TemplateAttack(PromptAttack):
    name = "template"
    Params = TemplateParams
    params: TemplateParams

    def __init__(self, spec: ComponentSpec, ctx: Context) -> None:
        super().__init__(spec, ctx)
        available = load_templates(self.params.file)
        which = self.params.name
        if which == "all":
            self.templates = available
        elif which in available:
            self.templates = {which: available[which]}
        else:
            raise SpecError(f"template: unknown template {which!r} (known: {', '.join(available)}, all)")

    def conversations(self, item: Item) -> list[tuple[str, list[tuple[str, str]]]]:
        return [
            (f"template={name}", [("user", apply_template(text, item.prompt))])
            for name, text in self.templates.items()
        ]

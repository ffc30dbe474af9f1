"""A memo of the utility readings that a model's weights determine: multiple choice, perplexity / KL and
refusal margins (with the first-token KL on harmful prompts).

Why: a sweep's analysis, and every re-run of an experiment, reads dozens of models, and these readings depend
only on the weights, the items, the settings and the library versions. Generations already resume from the
result store; without this memo the readings were recomputed on every pass (the free-lunch map's re-run must
take ≤ 3% of its first run). A model without a weights hash is never memoised: its reading could go stale.

Layout: ``<cache>/readings/<kind>/<sha256 of the key material>.json``, written atomically, with the key
material stored beside the value for audit. A torn or foreign file is ignored (and overwritten).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetydrift.hashing import sha256_json

if TYPE_CHECKING:
    from safetydrift.types import ResolvedModel

FORMAT = 1
_LIBS = ("torch", "transformers", "tokenizers", "jinja2", "llama_cpp_python", "numpy")
# the code that turns a model into each kind of reading: a change to any of these (token sets, templates,
# batching) is a new key for that kind only, with no version to bump by hand (a faster MC engine does not
# invalidate the margins); a kind not listed is keyed by all of them
_ENGINES = ("backends/transformers_backend.py", "llamacpp/model.py", "llamacpp/runtime.py")
_READERS: dict[str, tuple[str, ...]] = {
    "mc": ("analysis/mc.py", "analysis/metrics.py", "types.py", *_ENGINES),  # types: the chat format's system prompt
    "ppl_kl": ("analysis/metrics.py", *_ENGINES),
    "margins": ("analysis/margin.py", "analysis/logitlens.py", "types.py", *_ENGINES),
    "kl_harmful": ("analysis/margin.py", "analysis/logitlens.py", "types.py", *_ENGINES),
}
_ALL_READERS = tuple(sorted({f for files in _READERS.values() for f in files}))
# what else in an HF checkpoint directory decides a reading besides the weights: tokenizer, chat template, config
_HF_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
                  "tokenizer.model")


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def _code(kind: str) -> str:
    from safetydrift.hashing import sha256_bytes

    root = Path(__file__).resolve().parents[1]
    files = _READERS.get(kind, _ALL_READERS)
    return sha256_bytes(b"".join((root / f).read_bytes() for f in files if (root / f).exists()))


def model_key(model: ResolvedModel | None) -> dict[str, Any] | None:
    """What identifies a model's logits and how its prompts are rendered: its kind, weights hash and, for a
    checkpoint directory, the tokenizer, chat template and config files (a guard leaves the logits alone)."""
    if model is None:
        return {"model": None}
    if not model.weights_sha256:
        return None
    key: dict[str, Any] = {"kind": model.kind, "weights": model.weights_sha256}
    if model.path is not None and Path(model.path).is_dir():
        key["side_files"] = side_files(Path(model.path))
    return key


def side_files(checkpoint: Path) -> list[tuple[str, str]]:
    """(name, sha256) of a checkpoint directory's tokenizer, chat template and config files."""
    from safetydrift.hashing import sha256_file

    return sorted((f, sha256_file(checkpoint / f)) for f in _HF_SIDE_FILES if (checkpoint / f).is_file())


class Readings:
    """Get and put JSON readings by key material (``root=None``: a memo that remembers nothing)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._versions = _versions()
        self._code: dict[str, str] = {}

    def _path(self, kind: str, material: dict[str, Any]) -> Path | None:
        if self.root is None:
            return None
        return self.root / kind / f"{sha256_json(self._material(kind, material))}.json"

    def _material(self, kind: str, material: dict[str, Any]) -> dict[str, Any]:
        if kind not in self._code:
            self._code[kind] = _code(kind)
        return {"format": FORMAT, "kind": kind, "libs": self._versions, "code": self._code[kind], **material}

    def get(self, kind: str, material: dict[str, Any] | None) -> dict[str, Any] | None:
        path = None if material is None else self._path(kind, material)
        if path is None or not path.exists():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("value"), dict):
            return None
        return doc["value"]

    def put(self, kind: str, material: dict[str, Any] | None, value: dict[str, Any]) -> None:
        from safetydrift.store import atomic_write_text

        path = None if material is None else self._path(kind, material)
        if path is None:
            return
        assert material is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"format": FORMAT, "key": self._material(kind, material),
                                            "value": value}, default=str))

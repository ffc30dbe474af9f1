"""CSV/JSONL loading with errors that point at the bad file and row."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from safetydrift.errors import DataError
from safetydrift.hashing import sha256_json
from safetydrift.types import Dataset, Item

PROMPT_COLUMNS = ("prompt", "goal", "behavior", "instruction", "question", "text")
CATEGORY_COLUMNS = ("category", "harm_categories", "SemanticCategory")


#: csv's default field limit is 128 KiB ("field larger than field limit"): a long prompt is data, not a
#: malformed file (the backend refuses it per sample if it cannot fit the model's context).
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)  # the largest a C long takes everywhere


def _allow_csv_fields_of_any_size() -> None:
    """Raise the csv module's process-wide field limit (only ever raised, so concurrent readers agree)."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)


def package_file(name: str) -> Path:
    return Path(str(resources.files("safetydrift.datasets") / "data" / name))


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            _allow_csv_fields_of_any_size()
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise DataError(f"{path}: empty CSV (no header)")
                for i, row in enumerate(reader, start=2):
                    if None in row:  # more cells than header columns
                        raise DataError(f"{path}:{i}: row has more fields than the header")
                    yield i, row
        elif suffix in (".jsonl", ".json"):
            with path.open(encoding="utf-8") as f:
                for i, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{i}: malformed JSON ({e.msg})") from None
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}:{i}: expected a JSON object per line")
                    yield i, obj
        else:
            raise DataError(f"{path}: unsupported dataset format {suffix!r} (use .csv or .jsonl)")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None


def items_hash(items: Iterable[Item]) -> str:
    return sha256_json([[it.id, it.prompt, it.category, it.target] for it in items])


def load_file(
    path: Path,
    prompt_column: str | None = None,
    category_column: str | None = None,
    target_column: str | None = None,
    name: str | None = None,
    license: str = "",
) -> Dataset:
    path = Path(path)
    items: list[Item] = []
    seen: set[str] = set()
    pcol = ccol = tcol = None
    for lineno, row in _rows(path):
        if pcol is None:
            cols = list(row.keys())
            pcol = prompt_column or next((c for c in PROMPT_COLUMNS if c in cols), None)
            if pcol is None or pcol not in cols:
                want = prompt_column or "/".join(PROMPT_COLUMNS)
                raise DataError(f"{path}: no prompt column {want!r} (columns: {', '.join(map(str, cols))})")
            ccol = category_column or next((c for c in CATEGORY_COLUMNS if c in cols), None)
            if category_column and category_column not in cols:
                raise DataError(f"{path}: no category column {category_column!r}")
            tcol = target_column or ("target" if "target" in cols else None)
        prompt = row.get(pcol)
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path}:{lineno}: empty or non-text prompt in column {pcol!r}")
        # JSONL rows may differ in keys: without an explicit column, look for a known one per row.
        cat = row.get(ccol) if ccol else next((row[c] for c in CATEGORY_COLUMNS if row.get(c)), None)
        target = row.get(tcol) if tcol else row.get("target")
        it = Item.make(prompt.strip(), category=str(cat).strip() if cat else None,
                       target=str(target) if target else None, line=lineno)
        if it.id in seen:  # exact duplicates would be paired with themselves; keep the first
            continue
        seen.add(it.id)
        items.append(it)
    if not items:
        raise DataError(f"{path}: no rows")
    return Dataset(name=name or path.stem, items=tuple(items), source=str(path), sha256=items_hash(items),
                   license=license)

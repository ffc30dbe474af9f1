"""Numbers as text: the one place that decides how a rate, p-value, size or duration is printed.

Every formatter accepts anything (None, NaN, inf, a bool, a string) and prints the placeholder ``MISSING``
for what is not a finite number, so a half-filled result can always be shown. ``pct`` is the single percent
formatter of the package (the experiment report, the eval report's Jinja ``pct`` filter, and the console tables).
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "MISSING", "duration", "finite", "fixed", "human_bytes", "json_safe", "num", "pct", "pct_range", "pp",
    "pretty_json", "pval", "seconds", "slug", "trunc",
]

MISSING = "–"


def finite(x: Any) -> float | None:
    """A finite float, or None for missing / non-numeric / bool / NaN / inf (never an exception)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def pct(x: Any, digits: int = 1, *, sign: bool = False, suffix: str = "%", missing: str = MISSING) -> str:
    """A fraction as a percentage: ``pct(0.123) == "12.3%"``; ``sign`` adds "+", ``suffix=""`` drops the "%"."""
    v = finite(x)
    if v is None:
        return missing
    return f"{100 * v:{'+' if sign else ''}.{digits}f}{suffix}"


def pct_range(lo: Any, hi: Any, digits: int = 1, sep: str = "–", missing: str = MISSING) -> str:
    """An interval of fractions with one trailing "%": ``pct_range(0.1, 0.3) == "10.0–30.0%"``."""
    if finite(lo) is None or finite(hi) is None:
        return missing
    return f"{pct(lo, digits, suffix='')}{sep}{pct(hi, digits)}"


def pp(x: Any) -> str:
    """A difference of two rates in percentage points, always signed: ``pp(-0.05) == "-5.0 pp"``."""
    return pct(x, 1, sign=True, suffix=" pp")


def fixed(x: Any, digits: int = 3, missing: str = MISSING) -> str:
    """A plain number with a fixed number of decimals (kappa, F1): ``fixed(0.5) == "0.500"``."""
    v = finite(x)
    return missing if v is None else f"{v:.{digits}f}"


def num(x: Any, digits: int = 3) -> str:
    """An integer as is, any other number with ``digits`` significant digits."""
    v = finite(x)
    if v is None:
        return MISSING
    return str(int(v)) if isinstance(x, numbers.Integral) else f"{v:.{digits}g}"


def pval(x: Any) -> str:
    """A p-value: three decimals, scientific notation below 0.001 so a tiny p never reads as 0."""
    v = finite(x)
    if v is None:
        return MISSING
    return f"{v:.1e}" if v < 0.001 else f"{v:.3f}"


def human_bytes(n: Any) -> str:
    v = finite(n)
    if v is None:
        return MISSING
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return MISSING  # pragma: no cover


def seconds(x: Any) -> str:
    """A signed time difference (added latency), in ms below one second."""
    v = finite(x)
    if v is None:
        return MISSING
    if abs(v) < 1:
        return f"{v * 1000:+.0f} ms"
    return f"{v:+.2f} s"


def duration(x: Any) -> str:
    """A wall-clock duration, in minutes from two minutes on."""
    v = finite(x)
    if v is None:
        return MISSING
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def trunc(s: Any, n: int) -> str | None:
    """At most ``n`` characters of ``str(s)``, saying how long it was: model output can be megabytes."""
    if s is None:
        return None
    s = str(s)
    return s if len(s) <= n else f"{s[:n]}… [truncated; {len(s)} chars in total]"


def slug(s: str) -> str:
    """A file-name-safe fragment (figure names built from dataset and attack names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:60] or "x"


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → None (JSON.parse rejects NaN), tuples → lists, unknown objects → str."""
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return finite(obj)
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    return str(obj)


def pretty_json(obj: Any) -> str:
    return json.dumps(json_safe(obj), indent=2, ensure_ascii=False)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(v: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP "CSV injection"): text starting
    with ``= + - @``, tab or CR gets a leading ``'``. Numbers, including negative ones, stay numbers."""
    if not isinstance(v, str) or not v.startswith(_FORMULA_START):
        return v
    try:
        float(v)
    except ValueError:
        return "'" + v
    return v

"""Number formats of the pages and reports: one place, so a figure reads alike everywhere."""

from __future__ import annotations

import math

from serving.console.charts import percent, percent1


def _finite(v: object) -> bool:
    try:
        return v is not None and math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def money(v: float | None) -> str:
    """Whole currency units with thousands separators."""
    return f"{float(v):,.0f}" if _finite(v) else "–"


def money2(v: float | None) -> str:
    """Currency with cents."""
    return f"{float(v):,.2f}" if _finite(v) else "–"


def count(v: float | None) -> str:
    return f"{int(v):,}" if _finite(v) else "–"  # type: ignore[arg-type]


def num(v: float | None, digits: int = 2) -> str:
    return f"{float(v):,.{digits}f}" if _finite(v) else "–"


# The names templates call them by.
TEMPLATE_GLOBALS = {"money": money, "money2": money2, "int": count, "num": num,
                    "pct": percent, "pct1": percent1}

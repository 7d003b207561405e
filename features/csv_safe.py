"""The one CSV writer of the project: text cells a spreadsheet would run as formulas are defused.

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel,
LibreOffice and Google Sheets (CSV injection: a customer id such as `=HYPERLINK(...)` becomes a
live link in the retention team's spreadsheet). Following OWASP, such text cells get a leading
single quote, which spreadsheets show as text. Numeric columns are written unchanged, so a
negative number stays a number.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse(value: object) -> object:
    """`value` with a leading `'` when it is text that starts like a formula.

    >>> defuse("=1+1"), defuse("@cmd"), defuse("c0001"), defuse(-5)
    ("'=1+1", "'@cmd", 'c0001', -5)
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(frame: pd.DataFrame, path: str | Path | None = None) -> str | None:
    """Write `frame` as CSV (no index) to `path`, or return the text when `path` is None.

    Every non-numeric column, and the header, passes through `defuse`."""
    safe = frame.copy()
    for col in safe.columns:
        if not (pd.api.types.is_numeric_dtype(safe[col])
                or pd.api.types.is_datetime64_any_dtype(safe[col])):
            safe[col] = safe[col].map(defuse, na_action="ignore")
    safe.columns = [defuse(str(c)) for c in safe.columns]
    if path is None:
        return safe.to_csv(index=False)
    safe.to_csv(path, index=False)
    return None

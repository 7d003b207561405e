"""Reasons a retention agent can read, from the churn model's TreeSHAP contributions."""

from __future__ import annotations

import math
import re
import string

import numpy as np
import pandas as pd

_TEMPLATES: dict[str, str] = {
    "frequency": "{v:.0f} repeat purchase days so far",
    "recency": "{v:.0f} days between first and last purchase",
    "T": "customer for {v:.0f} days",
    "tenure_days": "customer for {v:.0f} days",
    "monetary_value": "average repeat order {v:,.0f}",
    "avg_order_value": "average order {v:,.0f}",
    "trend_90d": "spending {dir} over the last 90 days ({v:+.0%})",
    "return_rate": "returns {v:.0%} of what they buy",
    "distinct_products": "{v:.0f} different products bought",
    "basket_size": "{v:.1f} items per order",
    "gap_std": "irregular buyer (gap varies by {v:.0f} days)",
    "bg_p_alive": "estimated {v:.0%} chance still active",
    "pnbd_p_alive": "estimated {v:.0%} chance still active",
    "bg_p_zero": "{v:.0%} chance of no purchase by the usual pattern",
    "bg_expected": "{v:.1f} purchases expected by the usual pattern",
    "pnbd_expected": "{v:.1f} purchases expected by the usual pattern",
    "gg_spend": "typical spend per purchase {v:,.0f}",
    "r_score": "recency score {v:.0f}/5",
    "f_score": "frequency score {v:.0f}/5",
    "m_score": "monetary score {v:.0f}/5",
    "total_orders": "{v:.0f} orders in total",
    "total_spend": "{v:,.0f} spent in total",
    "orders_next90_ly": "{v:.0f} orders in the same 90 days last year",
    "spend_next90_ly": "{v:,.0f} spent in the same 90 days last year",
    "season_cos": "the time of year",
    **{f"orders_{w}d": "{v:.0f} orders in the last " + f"{w} days" for w in (30, 90, 180, 365)},
    **{f"spend_{w}d": "{v:,.0f} spent in the last " + f"{w} days" for w in (30, 90, 180, 365)},
}
_OVERDUE = ("days_since_last", "overdue_ratio", "gap_mean")


def _days(days: float) -> str:
    return f"no purchase for {days:.0f} days"


def _ratio(ratio: float) -> str:
    return f", {ratio:.1f}x the usual gap" if math.isfinite(ratio) else ""


def _value(name: str, v: float) -> str:
    if not math.isfinite(v):
        return f"too few purchases to measure {name.replace('_', ' ')}"
    template = _TEMPLATES.get(name, name.replace("_", " ") + " {v:.2f}")
    return template.format(v=v, dir="down" if v < 0 else "up")


# Features that say the same thing to a person share a family; the first member names it.
FAMILIES: dict[str, str] = {
    "overdue_ratio": "days_since_last", "gap_mean": "days_since_last",
    "r_score": "days_since_last",
    "pnbd_expected": "bg_expected", "pnbd_p_alive": "bg_p_alive", "bg_p_zero": "bg_p_alive",
    "tenure_days": "T", "season_sin": "season_cos",
}


# The member that words a family on the raising side, where the first member reads backwards
# ("estimated 92% chance still active" as a reason for risk; "35% chance of no purchase" is not).
RAISING_WORDS: dict[str, str] = {"bg_p_alive": "bg_p_zero"}


def explain(contrib: pd.DataFrame, features: pd.DataFrame, up: int = 3,
            down: int = 2) -> list[dict[str, list[str]]]:
    """Per row: the top factors raising and lowering the churn score, in words.

    Contributions of features that say the same thing (days since last purchase, overdue
    ratio; the BTYD models' alive and expected-purchase estimates) are summed into one factor,
    so a factor appears once, on the side its total pushes.
    """
    raising, lowering = _texts(contrib, features, up, down)
    return [{"raising": [t for t in r if t], "lowering": [t for t in w if t]}
            for r, w in zip(raising.tolist(), lowering.tolist(), strict=True)]


def explain_joined(contrib: pd.DataFrame, features: pd.DataFrame, up: int = 3,
                   down: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """`explain`'s factors per row joined with "; " (raising, lowering; object arrays): what
    the scorer returns, without building a list per row."""
    out = []
    for texts in _texts(contrib, features, up, down):
        joined = texts[:, 0].copy()
        for k in range(1, texts.shape[1]):
            more = texts[:, k] != ""  # factors fill their slots from the first
            joined[more] = joined[more] + "; " + texts[more, k]
        out.append(joined)
    return out[0], out[1]


def _grouped(contrib: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Family sums of the contributions (the same compensated sums in the same dtype as
    pandas' groupby-sum, so ties and signs come out the same)."""
    names = [c for c in contrib.columns if c != "bias"]
    raw = contrib[names].to_numpy()
    keys: list[str] = []
    members: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        key = FAMILIES.get(n, n)
        if key not in members:
            keys.append(key)
            members[key] = []
        members[key].append(i)
    values = np.empty((len(raw), len(keys)), dtype=raw.dtype)
    for j, key in enumerate(keys):
        total = raw[:, members[key][0]].copy()
        comp = np.zeros_like(total)
        for i in members[key][1:]:
            y = raw[:, i] - comp
            t = total + y
            comp = (t - total) - y
            comp[np.isnan(comp)] = 0
            total = t
        values[:, j] = total
    return keys, values


def _texts(contrib: pd.DataFrame, features: pd.DataFrame, up: int,
           down: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows x up) and (rows x down) object arrays of factor texts, "" where none."""
    keys, values = _grouped(contrib)
    rows = np.arange(len(values))[:, None]
    columns = _Columns(features)
    out = []
    for limit, sign in ((up, 1), (down, -1)):
        idx = _ranked(values, limit, largest=sign > 0)
        picked = sign * values[rows, idx] > 0
        # the loop stopped at the first factor on the wrong side
        picked &= np.cumprod(picked, axis=1, dtype=bool)
        texts = np.full(idx.size, "", dtype=object)
        slots = np.flatnonzero(picked)  # (row, slot) pairs as flat positions, row-major
        factor = idx.ravel()[slots]
        by_factor = np.argsort(factor, kind="stable")  # each factor's slots together
        slots, factor = slots[by_factor], factor[by_factor]
        starts = np.flatnonzero(np.r_[True, factor[1:] != factor[:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(factor)], strict=True):
            name = keys[factor[lo]]
            if sign > 0 and RAISING_WORDS.get(name) in columns.features:
                name = RAISING_WORDS[name]
            texts[slots[lo:hi]] = _column_texts(name, slots[lo:hi] // idx.shape[1], columns)
        out.append(texts.reshape(idx.shape))
    return out[0], out[1]


def _ranked(values: np.ndarray, limit: int, *, largest: bool) -> np.ndarray:
    """Per row, the column indices of its `limit` largest values, largest first, ties in column
    order (or of its smallest, smallest first, ties in reverse column order): the first and
    last `limit` of a stable descending argsort, found without sorting whole rows."""
    limit = min(limit, values.shape[1])
    if not np.isfinite(values).all():  # the sort's place for NaN is not argmax's
        order = np.argsort(-values, axis=1, kind="stable")
        return (order if largest else order[:, ::-1])[:, :limit]
    work = values.copy() if largest else values[:, ::-1].copy()
    rows = np.arange(len(values))
    out = np.empty((len(values), limit), dtype=np.intp)
    for k in range(limit):
        at = work.argmax(axis=1) if largest else work.argmin(axis=1)
        out[:, k] = at
        work[rows, at] = -np.inf if largest else np.inf
    return out if largest else values.shape[1] - 1 - out


class _Columns:
    """Numeric feature columns, converted on first use."""

    def __init__(self, features: pd.DataFrame) -> None:
        self.features = features
        self.cache: dict[str, np.ndarray] = {}

    def get(self, name: str, at: np.ndarray) -> np.ndarray:
        if name not in self.features:
            return np.full(len(at), np.nan)
        if name not in self.cache:
            self.cache[name] = _numbers(self.features[name])
        return self.cache[name][at]


def _column_texts(name: str, at: np.ndarray, columns: _Columns) -> np.ndarray:
    """The text of factor `name` for rows `at`, formatting each distinct text once."""
    if name in _OVERDUE:
        return (_each(columns.get("days_since_last", at), _days, 1.0)
                + _each(columns.get("overdue_ratio", at), _ratio, 10.0))
    template = _TEMPLATES.get(name, "{v:.2f}")
    return _each(columns.get(name, at), lambda a: _value(name, a), _scale(template))


def _scale(template: str) -> float | None:
    """10 ** (digits shown) of the template's {v:...} field (x100 for a percentage); None when
    it is not a fixed-point or percentage format."""
    fields = [spec for _, field, spec, _ in string.Formatter().parse(template) if field == "v"]
    if not fields:
        return 1.0  # the text does not show v
    match = re.fullmatch(r"[+\-]?,?\.(\d+)([f%])", fields[0] or "")
    if len(fields) > 1 or match is None:
        return None
    return 10.0 ** (int(match.group(1)) + (2 if match.group(2) == "%" else 0))


def _each(v: np.ndarray, fmt, scale: float | None = None) -> np.ndarray:
    """fmt(value) per element, called once per distinct text.

    Values whose rounding to the shown digits is the same number (and sign) get the same
    text, so one of them is formatted for all. Values that the shortcut could misjudge are
    formatted one by one (per distinct bit pattern): zeros, non-finite, huge, and those
    within 1e-6 of a rounding tie.
    """
    v = np.ascontiguousarray(v, dtype=np.float64)
    out = np.empty(len(v), dtype=object)
    alone = np.ones(len(v), dtype=bool)
    if scale is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            y = v * scale
            alone = (~np.isfinite(y) | (v == 0) | (np.abs(y) >= 1e9)
                     | (np.abs(y - np.floor(y) - 0.5) < 1e-6))
        rest = np.flatnonzero(~alone)
        if len(rest):
            keys, first, inverse = np.unique(np.round(y[rest]).view(np.int64),
                                             return_index=True, return_inverse=True)
            texts = np.asarray([fmt(float(a)) for a in v[rest[first]]], dtype=object)
            out[rest] = texts[inverse.ravel()]
    single = np.flatnonzero(alone)
    if len(single):
        bits, inverse = np.unique(v[single].view(np.int64), return_inverse=True)
        texts = np.asarray([fmt(float(a)) for a in bits.view(np.float64)], dtype=object)
        out[single] = texts[inverse.ravel()]
    return out


def _numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

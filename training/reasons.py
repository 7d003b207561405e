"""Reasons a retention agent can read, from the churn model's TreeSHAP contributions."""

from __future__ import annotations

import math

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
                   down: int = 2) -> tuple[list[str], list[str]]:
    """`explain`'s factors per row joined with "; " (raising, lowering): what the scorer
    returns, without building a dict per row."""
    return tuple(["; ".join(t for t in row if t) for row in texts.tolist()]
                 for texts in _texts(contrib, features, up, down))


def _grouped(contrib: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Family sums of the contributions (the same compensated sums in the same dtype as
    pandas' groupby-sum, so ties and signs come out the same)."""
    names = [c for c in contrib.columns if c != "bias"]
    keys: list[str] = []
    members: dict[str, list[str]] = {}
    for n in names:
        key = FAMILIES.get(n, n)
        if key not in members:
            keys.append(key)
            members[key] = []
        members[key].append(n)
    values = np.empty((len(contrib), len(keys)),
                      dtype=np.result_type(*contrib[names].dtypes) if names else np.float64)
    for j, key in enumerate(keys):
        total = contrib[members[key][0]].to_numpy(dtype=values.dtype, copy=True)
        comp = np.zeros_like(total)
        for n in members[key][1:]:
            y = contrib[n].to_numpy(dtype=values.dtype) - comp
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
    n = len(values)
    order = np.argsort(-values, axis=1, kind="stable")
    columns = {k: _numbers(features[k]) for k in {*keys, "days_since_last", "overdue_ratio"}
               if k in features}
    rows = np.arange(n)[:, None]
    out = []
    for idx, limit, sign in ((order, up, 1), (order[:, ::-1], down, -1)):
        idx = idx[:, :limit]
        picked = sign * values[rows, idx] > 0
        # the loop stopped at the first factor on the wrong side
        picked &= np.cumprod(picked, axis=1, dtype=bool)
        texts = np.full(idx.shape, "", dtype=object)
        for j in np.unique(idx[picked]):
            where = picked & (idx == j)
            texts[where] = _column_texts(keys[j], np.nonzero(where)[0], columns)
        out.append(texts)
    return out[0], out[1]


def _column_texts(name: str, at: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
    """`_fmt` for rows `at`, formatting each distinct value once."""
    nan = np.full(len(at), np.nan)
    if name in _OVERDUE:
        days = columns["days_since_last"][at] if "days_since_last" in columns else nan
        ratio = columns["overdue_ratio"][at] if "overdue_ratio" in columns else nan
        return _each(days, _days) + _each(ratio, _ratio)
    v = columns[name][at] if name in columns else nan
    return _each(v, lambda a: _value(name, a))


def _each(v: np.ndarray, fmt) -> np.ndarray:
    """fmt(value) per element, called once per distinct value (bit pattern, so -0.0 and 0.0
    keep their own signs)."""
    bits, inverse = np.unique(np.ascontiguousarray(v, dtype=np.float64).view(np.int64),
                              return_inverse=True)
    return np.asarray([fmt(float(a)) for a in bits.view(np.float64)],
                      dtype=object)[inverse.ravel()]


def _numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

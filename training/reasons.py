"""Reasons a retention agent can read, from the churn model's TreeSHAP contributions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _fmt(name: str, v: float, row: _Row) -> str:
    if name in ("days_since_last", "overdue_ratio", "gap_mean"):
        days = row.get("days_since_last")
        ratio = row.get("overdue_ratio")
        text = f"no purchase for {days:.0f} days"
        if math.isfinite(ratio):
            text += f", {ratio:.1f}x the usual gap"
        return text
    templates = {
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
    }
    for w in (30, 90, 180, 365):
        templates[f"orders_{w}d"] = "{v:.0f} orders in the last " + f"{w} days"
        templates[f"spend_{w}d"] = "{v:,.0f} spent in the last " + f"{w} days"
    if not math.isfinite(v):
        return f"too few purchases to measure {name.replace('_', ' ')}"
    template = templates.get(name, name.replace("_", " ") + " {v:.2f}")
    return template.format(v=v, dir="down" if v < 0 else "up")


# Features that say the same thing to a person share a family; the first member names it.
FAMILIES: dict[str, str] = {
    "overdue_ratio": "days_since_last", "gap_mean": "days_since_last",
    "r_score": "days_since_last",
    "pnbd_expected": "bg_expected", "pnbd_p_alive": "bg_p_alive", "bg_p_zero": "bg_p_alive",
    "tenure_days": "T",
}


def explain(contrib: pd.DataFrame, features: pd.DataFrame, up: int = 3,
            down: int = 2) -> list[dict[str, list[str]]]:
    """Per row: the top factors raising and lowering the churn score, in words.

    Contributions of features that say the same thing (days since last purchase, overdue
    ratio; the BTYD models' alive and expected-purchase estimates) are summed into one factor,
    so a factor appears once, on the side its total pushes.
    """
    names = [c for c in contrib.columns if c != "bias"]
    family = [FAMILIES.get(n, n) for n in names]
    grouped = contrib[names].T.groupby(family, sort=False).sum().T
    keys = list(grouped.columns)
    values = grouped.to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")
    columns = {k: _numbers(features[k]) for k in {*keys, "days_since_last", "overdue_ratio"}
               if k in features}
    out = []
    for i in range(len(grouped)):
        row = _Row(columns, i)
        result: dict[str, list[str]] = {"raising": [], "lowering": []}
        for key, idx, limit, sign in (("raising", order[i], up, 1),
                                      ("lowering", order[i, ::-1], down, -1)):
            for j in idx:
                if len(result[key]) == limit or sign * values[i, j] <= 0:
                    break
                result[key].append(_fmt(keys[j], row.get(keys[j]), row))
        out.append(result)
    return out


class _Row:
    """One row of pre-extracted numeric columns, read like a Series (`row.get(name)`)."""

    __slots__ = ("columns", "i")

    def __init__(self, columns: dict[str, np.ndarray], i: int) -> None:
        self.columns, self.i = columns, i

    def get(self, name: str) -> float:
        column = self.columns.get(name)
        return float("nan") if column is None else float(column[self.i])


def _numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)

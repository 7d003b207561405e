"""Customer value in margin terms: the scorer forecasts revenue, the answers count profit.

The models forecast net spend (revenue). When a customer's lines have a cost, the value fields
of an answer (`VALUE_COLUMNS`) are that revenue times the customer's historical margin rate
(`features.pointintime`: gross margin over net revenue before as_of), and `value_basis` says
"margin"; without a cost they stay revenue and say "revenue". Spend forecasts
(`expected_spend`, `spend_p*`) stay revenue: they are what the customer will pay.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import MARGIN, REVENUE

VALUE_COLUMNS: tuple[str, ...] = ("clv", "clv_p10", "clv_p50", "clv_p90", "value_at_risk")
# Interval ends swap when a negative margin rate turns the largest revenue into the worst loss.
_ENDS: tuple[tuple[str, str], ...] = (("clv_p10", "clv_p90"),)


def value_basis(features: pd.DataFrame) -> np.ndarray:
    """Each row's value basis: the snapshot's `value_basis`, "revenue" where it has none."""
    if "margin_rate" not in features or "value_basis" not in features:
        return np.full(len(features), REVENUE, dtype=object)
    basis = features["value_basis"].to_numpy(dtype=object)
    return np.where(basis == MARGIN, MARGIN, REVENUE).astype(object)


def in_margin_terms(scores: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """`scores` with VALUE_COLUMNS in margin terms where `features` (the scored rows, in the
    same order) know the margin (`value_basis`), else unchanged."""
    out = scores.copy()
    known = value_basis(features) == MARGIN
    if not known.any():
        return out
    rates = features["margin_rate"].to_numpy(dtype="float64", na_value=np.nan)
    rate = np.where(known, rates, 1.0)
    rate = np.where(np.isfinite(rate), rate, 0.0)  # no net revenue yet: nothing earned
    for col in VALUE_COLUMNS:
        if col in out:
            out[col] = out[col].to_numpy(dtype="float64") * rate
    for lo, hi in _ENDS:
        if lo in out and hi in out:
            a, b = out[lo].to_numpy(), out[hi].to_numpy()
            out[lo], out[hi] = np.minimum(a, b), np.maximum(a, b)
    return out

"""Customer value in margin terms: the scorer forecasts revenue, the answers count profit.

The models forecast net spend (revenue). When a customer's lines have a cost, the value fields
of an answer (`VALUE_COLUMNS`) are that revenue times the customer's historical margin rate
(`features.pointintime`: gross margin over net revenue before as_of), and `value_basis` says
"margin"; without a cost they stay revenue and say "revenue". Spend forecasts
(`expected_spend`, `spend_p*`) stay revenue: they are what the customer will pay.

Cost to serve (`COST_COLUMNS`): the customer's contacts logged in the campaign log over the
COST_TO_SERVE_DAYS before as_of, each at the offer catalogue's cost per contact, and the net
value `clv - cost_to_serve`; only when a campaign log and a catalogue are given.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.contract import MARGIN, REVENUE
from serving.offers import Catalogue, cost_to_serve

if TYPE_CHECKING:
    from features.campaign_log import CampaignLog

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


# Cost to serve counts the contacts logged in this many days before as_of (the lookback year
# of the value features): the cost a customer's campaigns bore over the year their value is read.
COST_TO_SERVE_DAYS = 365
COST_COLUMNS: tuple[str, ...] = ("cost_to_serve", "net_value")


def cost_window(as_of: object, days: int = COST_TO_SERVE_DAYS) -> tuple[dt.datetime, dt.datetime]:
    """(since, before) of the contacts whose cost counts: the `days` before as_of, as_of
    itself excluded (point in time: a contact on or after as_of is in the future)."""
    before = pd.Timestamp(str(as_of)).normalize().to_pydatetime().replace(tzinfo=None)
    return before - dt.timedelta(days=days), before


def costs_before(log: CampaignLog, catalogue: Catalogue, as_of: object) -> pd.Series:
    """Each contacted customer's cost to serve over the window before as_of (`cost_window`),
    by customer_id; customers without a contact in it are absent (their cost is 0)."""
    since, before = cost_window(as_of)
    return cost_to_serve(log.sent(since, before), catalogue)


def with_cost_to_serve(scores: pd.DataFrame, costs: pd.Series | None) -> pd.DataFrame:
    """`scores` (customer_id as a column or the index) with `cost_to_serve` (0 for a customer
    without a contact in the window) and `net_value` (clv - cost_to_serve) appended; unchanged
    when `costs` is None (no campaign log or catalogue: the fields answer null)."""
    if costs is None:
        return scores
    ids = scores["customer_id"] if "customer_id" in scores.columns else scores.index
    cost = pd.Series(ids, dtype=object).astype(str).map(costs).fillna(0.0)
    out = scores.copy()
    out["cost_to_serve"] = cost.to_numpy(dtype="float64")
    out["net_value"] = out["clv"].to_numpy(dtype="float64") - out["cost_to_serve"].to_numpy()
    return out


def row_with_cost(customer_id: str, row: dict, costs: pd.Series) -> dict:
    """One answer row (`Served.rows`) with `cost_to_serve` and `net_value` from `costs`."""
    cost = float(costs.get(customer_id, 0.0))
    clv = row.get("clv")
    return {**row, "cost_to_serve": cost,
            "net_value": None if clv is None else float(clv) - cost}

"""CRM metrics from canonical transactions and campaign logs: the figures a CRM manager tracks.

Pure pandas on the canonical tables of the data contract (`features.contract`); the console's
CRM page and `retention report` both show what these functions return, so a figure on the page
and in the report is the same number.

Conventions used by every metric below:

- a *purchase line* is a transaction line with `is_return` false; a *return line* has it true;
- an *order* is a distinct (customer_id, order_id) among purchase lines;
- a customer is *active* in a period when they have at least one purchase line in it;
- *net sales* of a period is the sum of `amount` over all its lines (refunds are negative);
- periods are calendar months ("2023-01") or quarters ("2023Q1") of the UTC timestamp, every
  period from the first line to the last, empty ones included.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

import numpy as np
import pandas as pd

Period = Literal["month", "quarter"]
PERIODS: tuple[Period, ...] = ("month", "quarter")
_FREQ: dict[str, str] = {"month": "M", "quarter": "Q"}
# Two-sided 95% normal quantile, for the campaign confidence intervals.
Z95 = 1.959963984540054

# Column -> (label, unit) of the metrics table, in the order pages and reports show them.
METRICS: dict[str, tuple[str, str]] = {
    "active_customers": ("Active customers", "customers"),
    "new_customers": ("New customers", "customers"),
    "retention_rate": ("Retention rate", "%"),
    "churn_rate": ("Churn rate", "%"),
    "repeat_purchase_rate": ("Repeat-purchase rate", "%"),
    "sales_per_customer": ("Sales per customer", "currency"),
    "average_order_value": ("Average order value", "currency"),
    "orders": ("Orders", "orders"),
    "net_sales": ("Net sales", "currency"),
}


def period_labels(timestamps: pd.Series, period: Period) -> pd.PeriodIndex:
    """The calendar period of each timestamp."""
    if period not in _FREQ:
        raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
    return pd.PeriodIndex(pd.to_datetime(timestamps), freq=_FREQ[period])


def crm_metrics(transactions: pd.DataFrame, period: Period = "month",
                data_end: dt.datetime | None = None) -> pd.DataFrame:
    """One row per period (index: the period's label), with these columns:

    - `active_customers` A(t): distinct customers with a purchase line in t.
    - `new_customers`: customers whose first purchase line ever (in the data) falls in t.
    - `retention_rate` = |A(t-1) ∩ A(t)| / |A(t-1)|: the share of last period's active
      customers who bought again this period; NaN for the first period and after an empty one.
    - `churn_rate` = 1 - retention_rate.
    - `repeat_purchase_rate`: customers with two or more orders in t / A(t).
    - `sales_per_customer` = net sales in t / A(t).
    - `average_order_value` = sum of `amount` over purchase lines in t / orders in t (returns
      are left out: it is what an order is worth when placed).
    - `orders`, `net_sales`: the counts and sums behind the ratios.
    - `partial`: True for a last period that the data stops inside of (its figures are low
      only because it is not over): `data_end`, the moment the data stops (a source's
      `extracted_at`; default the last line's timestamp), falls before the period's end.
    Ratios over an empty denominator are NaN.
    """
    tx = transactions
    labels = period_labels(tx["timestamp"], period)
    frame = pd.DataFrame({"customer_id": tx["customer_id"].astype(str).to_numpy(),
                          "order_id": tx["order_id"].astype(str).to_numpy(),
                          "period": labels, "amount": tx["amount"].astype(float).to_numpy(),
                          "is_return": tx["is_return"].astype(bool).to_numpy()})
    if frame.empty:
        return pd.DataFrame(columns=[*METRICS, "partial"], index=pd.Index([], name="period"))
    periods = pd.period_range(labels.min(), labels.max(), freq=_FREQ[period])
    buys = frame[~frame["is_return"]]
    per_customer = (buys.groupby(["period", "customer_id"], observed=True)["order_id"]
                    .nunique().rename("orders").reset_index())
    active = per_customer.groupby("period")["customer_id"].size().reindex(periods, fill_value=0)
    repeaters = (per_customer[per_customer["orders"] >= 2].groupby("period").size()
                 .reindex(periods, fill_value=0))
    orders = per_customer.groupby("period")["orders"].sum().reindex(periods, fill_value=0)
    first = buys.groupby("customer_id")["period"].min()
    new = first.value_counts().reindex(periods, fill_value=0)
    net = frame.groupby("period")["amount"].sum().reindex(periods, fill_value=0.0)
    gross = buys.groupby("period")["amount"].sum().reindex(periods, fill_value=0.0)

    # customers active in t who were active in t-1, by period t
    ordinals = pd.PeriodIndex(per_customer["period"]).asi8
    pairs = pd.DataFrame({"customer_id": per_customer["customer_id"].to_numpy(),
                          "ordinal": ordinals})
    again = pairs.merge(pairs.assign(ordinal=pairs["ordinal"] + 1), on=["customer_id", "ordinal"])
    kept = (again.groupby("ordinal").size().reindex(periods.asi8, fill_value=0)
            .to_numpy(dtype=float))
    before = active.shift(1).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        retention = np.where(before > 0, kept / before, np.nan)
        n_active = active.to_numpy(dtype=float)
        out = pd.DataFrame({
            "active_customers": active.to_numpy(),
            "new_customers": new.to_numpy(),
            "retention_rate": retention,
            "churn_rate": 1.0 - retention,
            "repeat_purchase_rate": _ratio(repeaters.to_numpy(dtype=float), n_active),
            "sales_per_customer": _ratio(net.to_numpy(dtype=float), n_active),
            "average_order_value": _ratio(gross.to_numpy(dtype=float),
                                          orders.to_numpy(dtype=float)),
            "orders": orders.to_numpy(),
            "net_sales": net.to_numpy(dtype=float),
        }, index=pd.Index([str(p) for p in periods], name="period"))
    stop = pd.Timestamp(data_end) if data_end is not None else pd.to_datetime(tx["timestamp"]).max()
    out["partial"] = False
    out.iloc[-1, out.columns.get_loc("partial")] = bool(stop < periods[-1].end_time)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def cohort_retention(transactions: pd.DataFrame, period: Period = "month",
                     max_age: int | None = None) -> pd.DataFrame:
    """Cohort retention matrix: rows are cohorts by the period of each customer's first
    purchase, columns ages 0, 1, 2, … periods since it; a cell is the share of the cohort's
    customers with a purchase line in period cohort + age (age 0 is 1.0 by definition).
    Cells past the data's last period are NaN. A `customers` column holds each cohort's size.
    `max_age` keeps ages 0..max_age."""
    buys = transactions[~transactions["is_return"].astype(bool)]
    if buys.empty:
        return pd.DataFrame(columns=["customers"], index=pd.Index([], name="cohort"))
    labels = period_labels(buys["timestamp"], period)
    frame = pd.DataFrame({"customer_id": buys["customer_id"].astype(str).to_numpy(),
                          "ordinal": labels.asi8}).drop_duplicates()
    first = frame.groupby("customer_id")["ordinal"].transform("min")
    frame["cohort"] = first
    frame["age"] = frame["ordinal"] - first
    last = int(frame["ordinal"].max())
    sizes = frame[frame["age"] == 0].groupby("cohort").size()
    counts = frame.groupby(["cohort", "age"]).size().unstack("age", fill_value=0)
    ages = range(0, (last - int(sizes.index.min())) + 1)
    if max_age is not None:
        ages = range(0, min(len(ages), max_age + 1))
    counts = counts.reindex(columns=list(ages), fill_value=0)
    shares = counts.div(sizes, axis=0).astype(float)
    for cohort in shares.index:
        shares.loc[cohort, [a for a in ages if cohort + a > last]] = np.nan
    freq = _FREQ[period]
    shares.index = pd.Index([str(pd.Period(ordinal=int(c), freq=freq)) for c in shares.index],
                            name="cohort")
    shares.columns = [int(a) for a in shares.columns]
    shares.insert(0, "customers", sizes.to_numpy())
    return shares


def _diff_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Difference of means a - b and its 95% normal interval (unequal variances)."""
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    diff = float(a.mean() - b.mean())
    var_a = float(a.var(ddof=1)) if len(a) > 1 else 0.0
    var_b = float(b.var(ddof=1)) if len(b) > 1 else 0.0
    se = math.sqrt(var_a / len(a) + var_b / len(b))
    return diff, diff - Z95 * se, diff + Z95 * se


def campaign_results(log: pd.DataFrame) -> pd.DataFrame:
    """Per campaign and offer, the treated customers against the campaign's control group.

    `log` is a canonical campaign log (one row per customer and campaign: arm, offer_id,
    converted, revenue; `features.campaign_log.campaign_frame` makes one from the event log).
    Treated: arm `treatment` with that offer; control: arm `control` of the same campaign (one
    control group shared by the campaign's offers). Columns:

    - `treated`, `control`: customers in each group;
    - `conversion_treated`, `conversion_control`: share converted;
    - `conversion_lift` = conversion_treated - conversion_control, with `conversion_lift_low`
      and `_high`, its 95% interval (normal approximation, unequal variances);
    - `revenue_per_treated`, `revenue_per_control`: mean revenue per customer;
    - `revenue_lift` = their difference, with a 95% interval likewise;
    - `incremental_revenue` = revenue_lift x treated: revenue the contact caused in the
      treated group, with `incremental_revenue_low` and `_high` (the interval x treated).
    Rows without a control group have NaN lifts.
    """
    cols = ["campaign_id", "offer_id", "treated", "control", "conversion_treated",
            "conversion_control", "conversion_lift", "conversion_lift_low",
            "conversion_lift_high", "revenue_per_treated", "revenue_per_control",
            "revenue_lift", "revenue_lift_low", "revenue_lift_high", "incremental_revenue",
            "incremental_revenue_low", "incremental_revenue_high"]
    if log.empty:
        return pd.DataFrame(columns=cols)
    frame = log.assign(converted=log["converted"].astype(float).fillna(0.0),
                       revenue=log["revenue"].astype(float).fillna(0.0),
                       offer_id=log["offer_id"].fillna("").astype(str),
                       arm=log["arm"].astype(str))
    rows = []
    for campaign, group in frame.groupby("campaign_id", sort=True):
        control = group[group["arm"] == "control"]
        treated_all = group[group["arm"] == "treatment"]
        for offer, treated in treated_all.groupby("offer_id", sort=True):
            conv = _diff_ci(treated["converted"].to_numpy(), control["converted"].to_numpy())
            rev = _diff_ci(treated["revenue"].to_numpy(), control["revenue"].to_numpy())
            n = len(treated)
            rows.append([
                str(campaign), str(offer) or "(no offer)", n, len(control),
                float(treated["converted"].mean()),
                float(control["converted"].mean()) if len(control) else math.nan,
                *conv,
                float(treated["revenue"].mean()),
                float(control["revenue"].mean()) if len(control) else math.nan,
                *rev, rev[0] * n, rev[1] * n, rev[2] * n])
    return pd.DataFrame(rows, columns=cols)

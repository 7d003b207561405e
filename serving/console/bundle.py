"""What the console derives once per `Served` bundle: the overview's aggregates and the risk
list's filter codes and sort orders.

A page then costs a few vectorised passes over arrays, whatever the population: filtering a
million customers is a handful of boolean masks, and a sorted page is the precomputed order
masked and sliced. A new bundle (a hot reload) gets its own derivations; the old ones go with
the old bundle.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serving.state import Served

# The risk band names `serving.config.RiskBands.band` gives, most urgent first.
BANDS: tuple[str, ...] = ("high", "medium", "low")

# Sortable columns of the risk list: key -> (column, label).
SORTS: dict[str, tuple[str, str]] = {
    "value_at_risk": ("value_at_risk", "Value at risk"),
    "churn": ("churn_probability", "Churn probability"),
    "clv": ("clv", "CLV"),
    "p_alive": ("p_alive", "P(alive)"),
    "purchases": ("expected_purchases", "Expected purchases"),
    "days_since_last": ("days_since_last", "Days since last purchase"),
    "customer": ("customer_id", "Customer"),
}


@dataclass(frozen=True)
class RiskFilter:
    """The risk list's filters as the page's query string gives them."""

    bands: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    min_value_at_risk: float | None = None
    min_clv: float | None = None
    sort: str = "value_at_risk"
    descending: bool = True


@dataclass
class Derived:
    """One bundle's derivations; sort orders are added on first use of each."""

    tiers: tuple[str, ...]
    segments: tuple[str, ...]
    codes: dict[str, np.ndarray]  # band / tier / segment -> category code per customer
    categories: dict[str, tuple[str, ...]]
    overview: dict
    orders: dict[tuple[str, bool], np.ndarray] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def tier_order(served: Served) -> tuple[str, ...]:
    """Value tiers best first, as the bundle's tier floors rank them."""
    present = [str(t) for t in pd.unique(served.scores["value_tier"].dropna())]
    ranked = [name for name, _ in served.tier_floors if name in present]
    return tuple(ranked + sorted(set(present) - set(ranked)))


def _codes(values: pd.Series, order: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    cat = pd.Categorical(values.astype(object), categories=list(order))
    return cat.codes.astype(np.int16), order


def _overview(s: pd.DataFrame, tiers: tuple[str, ...], segments: tuple[str, ...]) -> dict:
    clv = s["clv"].to_numpy(dtype="float64")
    var = s["value_at_risk"].to_numpy(dtype="float64")
    clv0 = np.where(np.isfinite(clv), np.maximum(clv, 0.0), 0.0)
    var0 = np.where(np.isfinite(var), var, 0.0)
    n = len(s)
    total_clv = float(clv0.sum())
    frame = pd.DataFrame({"band": s["risk_band"].to_numpy(), "tier": s["value_tier"].to_numpy(),
                          "segment": s["rfm_segment"].to_numpy(), "clv": clv0, "var": var0})
    by_tier = frame.groupby("tier").agg(customers=("clv", "size"), clv=("clv", "sum"),
                                        var=("var", "sum")).reindex(list(tiers), fill_value=0)
    tier_rows = []
    for tier, r in by_tier.iterrows():
        tier_rows.append({"tier": tier, "customers": int(r["customers"]),
                          "share_customers": r["customers"] / n if n else math.nan,
                          "clv": float(r["clv"]),
                          "share_value": r["clv"] / total_clv if total_clv else math.nan,
                          "clv_per_customer": r["clv"] / r["customers"] if r["customers"]
                          else math.nan,
                          "value_at_risk": float(r["var"])})
    band_tier = (frame.groupby(["band", "tier"]).size().unstack("tier", fill_value=0)
                 .reindex(index=list(BANDS), columns=list(tiers), fill_value=0))
    var_band = frame.groupby("band")["var"].sum().reindex(list(BANDS), fill_value=0.0)
    seg_tier = (frame.groupby(["segment", "tier"])["var"].sum().unstack("tier", fill_value=0.0)
                .reindex(index=list(segments), columns=list(tiers), fill_value=0.0))
    seg_tier = seg_tier.loc[seg_tier.sum(axis=1).sort_values(ascending=False).index]
    # Lorenz curve of CLV, most valuable first, on 101 points
    ranked = np.sort(clv0)[::-1]
    cum = np.concatenate([[0.0], np.cumsum(ranked)])
    at = np.linspace(0, n, 101).round().astype(int)
    share_value = (cum[at] / total_clv) if total_clv else np.linspace(0, 1, 101)
    return {
        "customers": n,
        "high_risk": int((frame["band"] == "high").sum()),
        "total_clv": total_clv,
        "total_var": float(var0.sum()),
        "tier_rows": tier_rows,
        "band_tier": band_tier,
        "var_band": var_band,
        "seg_tier": seg_tier,
        "lorenz": (np.linspace(0, 1, 101).tolist(), share_value.tolist()),
    }


def derive(served: Served) -> Derived:
    """The overview aggregates and the filter codes of a bundle (sort orders come lazily)."""
    s = served.scores
    tiers = tier_order(served)
    seg_present = set(pd.unique(s["rfm_segment"].dropna()).astype(str))
    from features.segments import RFM_SEGMENTS

    segments = tuple([name for name, _, _ in RFM_SEGMENTS if name in seg_present]
                     + sorted(seg_present - {name for name, _, _ in RFM_SEGMENTS}))
    codes, categories = {}, {}
    for key, col, order in (("band", "risk_band", BANDS), ("tier", "value_tier", tiers),
                            ("segment", "rfm_segment", segments)):
        codes[key], categories[key] = _codes(s[col], order)
    return Derived(tiers=tiers, segments=segments, codes=codes, categories=categories,
                   overview=_overview(s, tiers, segments))


class BundleCache:
    """The derivations of the bundle being served, rebuilt when `get_served` returns a new
    one. Holds the bundle weakly so that a reloaded-away bundle is freed."""

    def __init__(self, get_served: Callable[[], Served]) -> None:
        self.get_served = get_served
        self._lock = threading.Lock()
        self._ref: weakref.ref[Served] | None = None
        self._derived: Derived | None = None

    def current(self) -> tuple[Served, Derived]:
        served = self.get_served()
        with self._lock:
            if self._ref is None or self._ref() is not served or self._derived is None:
                self._derived = derive(served)
                self._ref = weakref.ref(served)
            return served, self._derived


def sort_order(served: Served, derived: Derived, key: str, descending: bool) -> np.ndarray:
    """Row positions sorted by `key` (missing values last either way); computed once per
    bundle, key and direction. Ties keep the population's order (value at risk ties are
    broken by churn probability, as `/risk_list` does)."""
    if key not in SORTS:
        key = "value_at_risk"
    found = derived.orders.get((key, descending))
    if found is not None:
        return found
    with derived.lock:
        found = derived.orders.get((key, descending))
        if found is not None:
            return found
        col = SORTS[key][0]
        if col == "customer_id":
            ids = served.scores.index.to_numpy().astype(str)
            order = np.argsort(ids, kind="stable")
            order = order[::-1].copy() if descending else order
        else:
            values = served.columns[col].astype("float64") if col in served.columns else (
                served.scores[col].to_numpy(dtype="float64"))
            missing = ~np.isfinite(values)
            keyed = np.where(missing, np.inf, -values if descending else values)
            if key == "value_at_risk":
                churn = served.scores["churn_probability"].to_numpy(dtype="float64")
                order = np.lexsort((-churn if descending else churn, keyed))
            else:
                order = np.argsort(keyed, kind="stable")
        derived.orders[(key, descending)] = order
        return order


def filter_mask(served: Served, derived: Derived, f: RiskFilter) -> np.ndarray:
    """True for the customers the filters keep."""
    n = len(served.scores)
    mask = np.ones(n, dtype=bool)
    for key, chosen in (("band", f.bands), ("tier", f.tiers), ("segment", f.segments)):
        if chosen:
            names = derived.categories[key]
            keep = np.zeros(len(names) + 1, dtype=bool)  # the last slot: code -1, missing
            keep[[names.index(c) for c in chosen if c in names]] = True
            mask &= keep[derived.codes[key]]
    for col, floor in (("value_at_risk", f.min_value_at_risk), ("clv", f.min_clv)):
        if floor is not None:
            values = served.columns[col] if col in served.columns else served.scores[col]
            mask &= np.asarray(values, dtype="float64") >= floor
    return mask


def filtered_positions(served: Served, derived: Derived, f: RiskFilter) -> np.ndarray:
    """Positions of the kept customers, in the chosen order."""
    order = sort_order(served, derived, f.sort, f.descending)
    mask = filter_mask(served, derived, f)
    if mask.all():
        return order
    return order[mask[order]]

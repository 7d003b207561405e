"""RFM scores (quintiles), named RFM segments and value tiers, as Ibis expressions.

Scores come from integer ranks so ties always share a score and every backend agrees exactly.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
from pydantic import BaseModel, field_validator

# (segment, R scores, F scores): the widely used 10-segment map on the R and F quintiles.
RFM_SEGMENTS: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("Champions", (5,), (4, 5)),
    ("Loyal Customers", (3, 4), (4, 5)),
    ("Potential Loyalists", (4, 5), (2, 3)),
    ("New Customers", (5,), (1,)),
    ("Promising", (4,), (1,)),
    ("Need Attention", (3,), (3,)),
    ("About to Sleep", (3,), (1, 2)),
    ("Can't Lose Them", (1, 2), (5,)),
    ("At Risk", (1, 2), (3, 4)),
    ("Hibernating", (1, 2), (1, 2)),
)


class ValueTiers(BaseModel):
    """Value tiers by share of customers ranked on spend in the lookback, best first.

    Default: top 5% platinum, next 15% gold, next 30% silver, the rest bronze.
    """

    tiers: dict[str, float] = {"platinum": 0.05, "gold": 0.15, "silver": 0.30}
    rest: str = "bronze"

    @field_validator("tiers")
    @classmethod
    def _shares(cls, v: dict[str, float]) -> dict[str, float]:
        if any(s <= 0 for s in v.values()) or sum(v.values()) > 1:
            raise ValueError("tier shares must be positive and add up to at most 1")
        return v


def quintile(value: ir.NumericValue, *, higher_is_better: bool = True) -> ir.IntegerValue:
    """Score 1..5 from the value's rank among all rows (ties share the lower rank)."""
    order = value if higher_is_better else value.negate()
    rank = ibis.rank().over(order_by=order)
    n = value.count().over()
    score = 1 + (rank * 5) // ibis.greatest(n - 1, 1)
    return ibis.least(score, 5).cast("int8")


def add_rfm(features: ir.Table) -> ir.Table:
    """Add r_score, f_score, m_score and rfm_segment (R on days since last purchase,
    F on orders and M on net spend in the lookback)."""
    t = features.mutate(
        r_score=quintile(features.days_since_last, higher_is_better=False),
        f_score=quintile(features.orders_365d),
        m_score=quintile(features.spend_365d),
    )
    branches = [
        (t.r_score.isin(list(r)) & t.f_score.isin(list(f)), ibis.literal(name))
        for name, r, f in RFM_SEGMENTS
    ]
    return t.mutate(rfm_segment=ibis.cases(*branches, else_=ibis.literal("Hibernating")))


def add_value_tier(features: ir.Table, tiers: ValueTiers | None = None, *,
                   by: str = "spend_365d") -> ir.Table:
    """Add value_tier from the rank on `by` (spend_365d by default; highest first)."""
    tiers = tiers or ValueTiers()
    # Compared as float64 (exact below 2**53): Spark's rank is int32, so rank * 10_000 in
    # integers leaves it from 214,749 customers on and wraps silently; Ibis types rank as
    # int64 and drops a cast to it.
    rank = ibis.rank().over(order_by=features[by].desc()).cast("float64")
    n = features[by].count().over()
    branches = []
    cumulative = 0
    for name, share in tiers.tiers.items():
        cumulative += round(share * 10_000)
        branches.append((rank * 10_000 < n * cumulative, ibis.literal(name)))
    return features.mutate(value_tier=ibis.cases(*branches, else_=ibis.literal(tiers.rest)))

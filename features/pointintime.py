"""Point-in-time customer features and labels per (customer, as_of), written once in Ibis.

Time rule (DESIGN.md): a feature row for (customer, as_of) uses only events with
timestamp < as_of; labels for horizon H use only as_of <= timestamp < as_of + H. Every as_of is
a UTC midnight, so both rules reduce to comparisons of whole day numbers (days since
1970-01-01), which every backend computes identically.

Profit: with a line `cost` (features.contract.COST), `gross_margin` is net revenue minus net
cost (returned goods come back, so a return gives back its line's margin: `returns_cost`),
`margin_rate` its share of net revenue and `margin_365d` the margin of the lookback year, on
which value tiers rank. Without a cost every line costs 0: margin equals revenue, the rate is 1
and `value_basis` says "revenue" instead of "margin".

The BTYD summary follows lifetimes' day-level convention with the observation period ending on
the last day before as_of: frequency = repeat purchase days, recency = last - first purchase
day, T = (as_of - 1 day) - first purchase day, monetary_value = mean sales of the repeat days.
"""

from __future__ import annotations

import datetime as dt

import ibis
import ibis.expr.types as ir

from features.contract import COST, MARGIN, REVENUE
from features.segments import ValueTiers, add_rfm, add_value_tier

WINDOWS: tuple[int, ...] = (30, 90, 180, 365)
MONEY = "decimal(18, 4)"  # exact money sums (see purchase_days); features leave as float64
_EPOCH = dt.date(1970, 1, 1)


def day_number(d: dt.date) -> int:
    """Days since 1970-01-01 (the integer day used by every expression here)."""
    return (d - _EPOCH).days


def _day(timestamp: ir.TimestampValue) -> ir.IntegerValue:
    return (timestamp.epoch_seconds() // 86400).cast("int32")


def purchase_days(transactions: ir.Table) -> ir.Table:
    """One row per (customer, day): gross sales, refunds, orders and items.

    A day is a purchase day when it has at least one sale line (return-only days are not).
    This is as_of independent, so a run over many as_of dates computes it once.
    Money is summed as DECIMAL (amounts to 1/10,000): exact, so every sum downstream is the
    same on every run and backend. Parallel float sums differed in the last bits between runs,
    and those bits moved XGBoost's split points: retraining on the same data gave other models.
    """
    if COST not in transactions.columns:  # a source without cost: every line's is unknown
        transactions = transactions.mutate(**{COST: ibis.null("float64")})
    t = transactions.mutate(day=_day(transactions.timestamp),
                            money=transactions.amount.cast(MONEY),
                            cost_money=transactions[COST].cast(MONEY))
    sale = ~t.is_return
    zero = ibis.literal(0, type=MONEY)
    return t.group_by(["customer_id", "day"]).aggregate(
        sales=t.money.sum(where=sale).fill_null(zero),
        refunds=t.money.sum(where=t.is_return).fill_null(zero),
        n_orders=t.order_id.nunique(where=sale),
        items=t.quantity.sum(where=sale).fill_null(0.0),
        n_sale_lines=sale.sum(),
        sales_cost=t.cost_money.sum(where=sale).fill_null(zero),
        returns_cost=t.cost_money.sum(where=t.is_return).fill_null(zero),
        uncosted_lines=t.cost_money.isnull().sum(),
    )


def first_purchases(transactions: ir.Table) -> ir.Table:
    """The first day each customer bought each product (for distinct products at any as_of)."""
    t = transactions.filter(~transactions.is_return)
    t = t.mutate(day=_day(t.timestamp))
    return t.group_by(["customer_id", "product_id"]).aggregate(day=t.day.min())


def sale_days(transactions: ir.Table, as_of: dt.date) -> ir.Table:
    """Purchase days before as_of straight from the lines: (customer_id, day, sales)."""
    t = transactions.mutate(day=_day(transactions.timestamp))
    t = t.filter(~t.is_return & (t.day < day_number(as_of)))
    return t.group_by(["customer_id", "day"]).aggregate(sales=t.amount.sum())


def btyd_summary(days: ir.Table, as_of: dt.date) -> ir.Table:
    """frequency, recency, T and monetary_value per customer from its purchase days before as_of.

    `days` holds one row per (customer_id, day) with the day's `sales`; plain aggregates only
    (the first day's sales by arg-min), so it stays one cheap group-by on any backend.
    """
    a = day_number(as_of)
    s = days.group_by("customer_id").aggregate(
        n_days=days.count(),
        first_day=days.day.min(),
        last_day=days.day.max(),
        total_sales=days.sales.sum(),
        first_sales=days.sales.argmin(days.day),
    )
    frequency = s.n_days - 1
    return s.mutate(
        frequency=frequency.cast("int32"),
        recency=(s.last_day - s.first_day).cast("int32"),
        T=(a - 1 - s.first_day).cast("int32"),
        # float64 before dividing: a DECIMAL quotient's scale differs by backend (Spark: 6 places)
        monetary_value=ibis.ifelse(
            frequency > 0,
            (s.total_sales - s.first_sales).cast("float64") / frequency.cast("float64"),
            0.0,
        ),
    )


def core_features(transactions: ir.Table, as_of: dt.date) -> ir.Table:
    """Only the BTYD core columns, straight from the transaction lines (what BTYD models need)."""
    s = btyd_summary(sale_days(transactions, as_of), as_of)
    return s.select("customer_id", "frequency", "recency", "T", "monetary_value").mutate(
        as_of=ibis.literal(as_of)
    )


def customer_features(
    days: ir.Table,
    products: ir.Table,
    as_of: dt.date,
    *,
    lookback_days: int = 365,
    tiers: ValueTiers | None = None,
) -> ir.Table:
    """The full feature row per customer with a purchase before as_of.

    `in_population` marks customers with a purchase in the lookback (DESIGN.md's population);
    RFM scores and value tiers rank all customers of the as_of.
    """
    a = day_number(as_of)
    bought = days.filter((days.day < a) & (days.n_sale_lines > 0))
    s = btyd_summary(bought, as_of)
    gap = bought.day - bought.day.lag().over(group_by=bought.customer_id, order_by=bought.day)
    gaps = bought.mutate(gap=gap.cast("int64")).group_by("customer_id").aggregate(
        gap_squares=(ibis._.gap * ibis._.gap).sum()
    )
    h = days.filter(days.day < a)
    last_year = (h.day >= a - 365) & (h.day < a - 365 + 90)
    aggs = {
        "total_orders": h.n_orders.sum(),
        "gross_sales": h.sales.sum(),
        "refunds": h.refunds.sum(),
        "items": h.items.sum(),
        "sales_last_90": h.sales.sum(where=h.day >= a - 90).fill_null(0.0),
        "sales_prev_90": h.sales.sum(where=(h.day >= a - 180) & (h.day < a - 90)).fill_null(0.0),
        "orders_next90_ly": h.n_orders.sum(where=last_year).fill_null(0),
        "spend_next90_ly": (h.sales + h.refunds).sum(where=last_year).fill_null(0.0),
        "sales_cost": h.sales_cost.sum(),
        "returns_cost": h.returns_cost.sum(),
        "cost_365d": (h.sales_cost + h.returns_cost).sum(where=h.day >= a - 365).fill_null(
            ibis.literal(0, type=MONEY)),
        "uncosted_lines": h.uncosted_lines.sum(),
    }
    for w in WINDOWS:
        recent = h.day >= a - w
        aggs[f"orders_{w}d"] = h.n_orders.sum(where=recent).fill_null(0)
        aggs[f"spend_{w}d"] = (h.sales + h.refunds).sum(where=recent).fill_null(0.0)
    history = h.group_by("customer_id").aggregate(**aggs)
    prods = products.filter(products.day < a).group_by("customer_id").aggregate(
        distinct_products=ibis._.count()
    )
    f = s.join(history, "customer_id").join(gaps, "customer_id").left_join(prods, "customer_id")
    gap_mean = ibis.ifelse(f.frequency > 0, f.recency / f.frequency.cast("float64"), None)
    # Sample standard deviation of the gaps between purchase days from their count
    # (frequency), sum (recency) and sum of squares, exact in int64 up to one division and
    # one square root: the same bits on every backend and run.
    n_gaps, gap_sum = f.frequency.cast("int64"), f.recency.cast("int64")
    spread = (n_gaps * f.gap_squares.fill_null(0) - gap_sum * gap_sum).cast("float64")
    gap_std = ibis.ifelse(n_gaps > 1, (spread / (n_gaps * (n_gaps - 1)).cast("float64")).sqrt(),
                          None)
    days_since_last = (a - f.last_day).cast("int32")
    recent, before = f.sales_last_90, f.sales_prev_90
    gross = f.gross_sales
    net = gross + f.refunds
    known = f.uncosted_lines == 0
    zero = ibis.literal(0, type=MONEY)
    net_cost = ibis.ifelse(known, f.sales_cost + f.returns_cost, zero)
    margin = (net - net_cost).cast("float64")
    out = f.select(
        customer_id=f.customer_id,
        as_of=ibis.literal(as_of),
        in_population=days_since_last <= lookback_days,
        frequency=f.frequency,
        recency=f.recency,
        T=f.T,
        monetary_value=f.monetary_value.cast("float64"),
        days_since_last=days_since_last,
        tenure_days=(a - f.first_day).cast("int32"),
        **{f"orders_{w}d": f[f"orders_{w}d"].cast("int64") for w in WINDOWS},
        **{f"spend_{w}d": f[f"spend_{w}d"].cast("float64") for w in WINDOWS},
        orders_next90_ly=f.orders_next90_ly.cast("int64"),
        spend_next90_ly=f.spend_next90_ly.cast("float64"),
        total_orders=f.total_orders.cast("int64"),
        total_spend=(gross + f.refunds).cast("float64"),
        avg_order_value=ibis.ifelse(f.total_orders > 0, gross.cast("float64") / f.total_orders,
                                    None),
        basket_size=ibis.ifelse(f.total_orders > 0, f.items / f.total_orders, None),
        distinct_products=f.distinct_products.fill_null(0).cast("int64"),
        gap_mean=gap_mean,
        gap_std=gap_std,
        overdue_ratio=days_since_last / gap_mean,
        trend_90d=ibis.ifelse(recent + before > 0,
                              (recent - before).cast("float64") / (recent + before).cast("float64"),
                              None),
        return_rate=ibis.ifelse(gross > 0, f.refunds.abs().cast("float64") / gross.cast("float64"),
                                None),
        gross_margin=margin,
        margin_rate=ibis.ifelse(known & (net <= 0), 0.0,
                                ibis.ifelse(known, margin / net.cast("float64"), 1.0)),
        returns_cost=(ibis.ifelse(known, f.returns_cost, zero) - f.refunds).cast("float64"),
        margin_365d=(f["spend_365d"] - ibis.ifelse(known, f.cost_365d, zero)).cast("float64"),
        value_basis=ibis.ifelse(known, MARGIN, REVENUE),
    )
    return add_value_tier(add_rfm(out), tiers, by="margin_365d")


def labels(days: ir.Table, as_of: dt.date, horizon_days: int) -> ir.Table:
    """Labels in [as_of, as_of + H): purchase days, net spend and days to the next purchase."""
    a = day_number(as_of)
    w = days.filter((days.day >= a) & (days.day < a + horizon_days))
    bought = w.n_sale_lines > 0
    return w.group_by("customer_id").aggregate(
        n_purchases=bought.sum().cast("int64"),
        spend=(w.sales + w.refunds).sum().cast("float64"),
        next_day=w.day.min(where=bought),
    )


def with_labels(
    features: ir.Table, days: ir.Table, as_of: dt.date, horizon_days: int, data_end: dt.date
) -> ir.Table:
    """Join labels for horizon H; they are null when the data ends before as_of + H.

    `churned` = no purchase in the window; `days_to_next` is censored at H
    (`next_observed` says whether a purchase was seen).
    """
    complete = day_number(data_end) >= day_number(as_of) + horizon_days
    lab = labels(days, as_of, horizon_days)
    j = features.left_join(lab, "customer_id")
    n = j.n_purchases.fill_null(0)
    observed = j.next_day.notnull()
    to_next = ibis.ifelse(observed, j.next_day - day_number(as_of), horizon_days)
    cols = {
        "horizon_days": ibis.literal(horizon_days, type="int32"),
        "label_complete": ibis.literal(complete),
        "churned": ibis.ifelse(ibis.literal(complete), n == 0, ibis.null("boolean")),
        "n_purchases": ibis.ifelse(ibis.literal(complete), n, ibis.null("int64")),
        "spend": ibis.ifelse(ibis.literal(complete), j.spend.fill_null(0.0), ibis.null("float64")),
        "days_to_next": ibis.ifelse(
            ibis.literal(complete), to_next.cast("int32"), ibis.null("int32")
        ),
        "next_observed": ibis.ifelse(ibis.literal(complete), observed, ibis.null("boolean")),
    }
    return j.select(*[c for c in features.columns], **cols)

"""Features and labels on a tiny fixture, checked against values computed by hand."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from features import engine

AS_OF = dt.date(2024, 2, 10)


def tx(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "timestamp", "product_id",
                                        "quantity", "amount", "is_return"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).astype("datetime64[us]")
    for col in ("customer_id", "order_id", "product_id"):
        frame[col] = frame[col].astype("string")
    return frame


FIXTURE = tx([
    # A: purchase days Jan 1, Jan 11, Jan 31; a refund Feb 5; one purchase after as_of.
    ("A", "o1", "2024-01-01 10:00", "p1", 1, 10.0, False),
    ("A", "o1", "2024-01-01 10:00", "p2", 2, 30.0, False),
    ("A", "o2", "2024-01-11 09:00", "p1", 1, 30.0, False),
    ("A", "o3", "2024-01-31 23:00", "p3", 2, 50.0, False),
    ("A", "r1", "2024-02-05 12:00", "p3", -1, -10.0, True),
    ("A", "o4", "2024-02-20 12:00", "p1", 1, 25.0, False),
    # B: one purchase a minute before as_of, the next exactly at as_of (a label, not a feature).
    ("B", "o5", "2024-02-09 23:59", "p2", 1, 15.0, False),
    ("B", "o6", "2024-02-10 00:00", "p2", 1, 20.0, False),
    # C: first purchase after as_of: no feature row.
    ("C", "o7", "2024-02-11 08:00", "p1", 1, 5.0, False),
])


@pytest.fixture(scope="module")
def rows() -> dict[str, pd.Series]:
    con = engine.connect()
    tables = engine.prepare(con, FIXTURE, data_end=dt.date(2024, 6, 1))
    frame = engine.feature_table(tables, AS_OF, horizon_days=30).to_pandas()
    return {r.customer_id: r for r in frame.itertuples(index=False)}


def test_population_is_customers_with_a_purchase_before_as_of(rows):
    assert sorted(rows) == ["A", "B"]


def test_btyd_summary_by_hand(rows):
    a, b = rows["A"], rows["B"]
    assert (a.frequency, a.recency, a.T) == (2, 30, 39)
    assert a.monetary_value == pytest.approx((30 + 50) / 2)
    assert (b.frequency, b.recency, b.T, b.monetary_value) == (0, 0, 0, 0.0)


def test_windows_gaps_and_behaviour_by_hand(rows):
    a = rows["A"]
    assert a.days_since_last == 10 and a.tenure_days == 40
    assert (a.orders_30d, a.spend_30d) == (2, 30 + 50 - 10)
    assert (a.orders_90d, a.spend_90d) == (3, 120 - 10)
    assert (a.total_orders, a.total_spend) == (3, 110)
    assert a.avg_order_value == pytest.approx(40.0)
    assert a.basket_size == pytest.approx((1 + 2 + 1 + 2) / 3)
    assert a.distinct_products == 3
    assert a.gap_mean == pytest.approx(15.0)
    assert a.gap_std == pytest.approx(7.0710678)
    assert a.overdue_ratio == pytest.approx(10 / 15)
    assert a.trend_90d == pytest.approx(1.0)
    assert a.return_rate == pytest.approx(10 / 120)
    assert rows["B"].days_since_last == 1 and pd.isna(rows["B"].gap_mean)


def test_rfm_and_tier(rows):
    a, b = rows["A"], rows["B"]
    assert (b.r_score, a.r_score) == (5, 1)
    assert (a.f_score, b.f_score) == (5, 1)
    assert a.rfm_segment == "Can't Lose Them" and b.rfm_segment == "New Customers"
    assert a.value_tier == "platinum" and b.value_tier == "bronze"


def test_labels_by_hand(rows):
    a, b = rows["A"], rows["B"]
    assert a.label_complete and b.label_complete
    assert (a.churned, a.n_purchases, a.spend, a.days_to_next) == (False, 1, 25.0, 10)
    assert (b.churned, b.n_purchases, b.spend, b.days_to_next) == (False, 1, 20.0, 0)


def test_labels_are_null_when_data_ends_inside_the_horizon():
    con = engine.connect()
    tables = engine.prepare(con, FIXTURE, data_end=dt.date(2024, 3, 1))
    frame = engine.feature_table(tables, AS_OF, horizon_days=30).to_pandas()
    assert not frame["label_complete"].any()
    assert frame["churned"].isna().all() and frame["n_purchases"].isna().all()


def test_core_features_straight_from_lines_match_the_full_table(rows):
    import ibis

    from features.pointintime import core_features

    core = engine.connect().to_pyarrow(core_features(ibis.memtable(FIXTURE), AS_OF)).to_pandas()
    got = {r.customer_id: (r.frequency, r.recency, r.T, r.monetary_value)
           for r in core.itertuples()}
    assert got == {k: (v.frequency, v.recency, v.T, v.monetary_value) for k, v in rows.items()}

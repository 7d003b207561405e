"""Property: transactions at or after as_of never change any feature row, the profit columns
(with and without a line cost) included."""

from __future__ import annotations

import datetime as dt

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import engine
from features.contract import PROFIT_COLUMNS
from features.pointintime import WINDOWS

AS_OF = dt.date(2024, 1, 1)
AS_OF_TS = pd.Timestamp(AS_OF)
LABELS = ["horizon_days", "label_complete", "churned", "n_purchases", "spend", "days_to_next",
          "next_observed"]

line = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "e"]),          # customer
    st.integers(0, 6),                                   # order number
    st.integers(-800 * 24 * 60, 200 * 24 * 60),          # minutes from as_of
    st.sampled_from(["p1", "p2", "p3", "p4"]),
    st.integers(1, 4),                                   # quantity
    st.floats(0.5, 500, allow_nan=False),                # unit price
    st.booleans(),                                       # return?
    st.floats(0.0, 1.5, allow_nan=False),                # cost / amount (above 1: a loss)
)


def frame(lines: list[tuple]) -> pd.DataFrame:
    rows = []
    for cust, order, minutes, prod, qty, price, ret, cost_share in lines:
        sign = -1 if ret else 1
        rows.append((cust, f"{cust}{order}{'r' if ret else ''}",
                     AS_OF_TS + pd.Timedelta(minutes=minutes), prod, sign * qty,
                     sign * qty * price, ret, sign * qty * price * cost_share))
    out = pd.DataFrame(rows, columns=["customer_id", "order_id", "timestamp", "product_id",
                                      "quantity", "amount", "is_return", "cost"])
    out["timestamp"] = out["timestamp"].astype("datetime64[us]")
    return out


def features(tx: pd.DataFrame) -> pd.DataFrame:
    tables = engine.prepare(engine.connect(), tx, data_end=dt.date(2030, 1, 1))
    out = engine.feature_table(tables, AS_OF, horizon_days=90).to_pandas()
    return out.drop(columns=LABELS).sort_values("customer_id").reset_index(drop=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=st.lists(line, min_size=1, max_size=30), future=st.lists(line, max_size=30),
       costed=st.booleans())
def test_events_at_or_after_as_of_never_change_features(past, future, costed):
    before = [x for x in past if x[2] < 0]
    after = [(c, o + 10, abs(m), *rest) for c, o, m, *rest in future]
    if not any(not x[6] for x in before):
        before.append(("a", 9, -60, "p1", 1, 10.0, False, 0.5))
    past_tx, all_tx = frame(before), frame(before + after)
    if not costed:  # a source without cost: the profit columns on the revenue basis
        past_tx, all_tx = past_tx.drop(columns="cost"), all_tx.drop(columns="cost")
    base = features(past_tx)
    grown = features(all_tx)
    pd.testing.assert_frame_equal(base, grown)
    assert len(base) > 0
    assert set(f"spend_{w}d" for w in WINDOWS) <= set(base.columns)
    assert set(PROFIT_COLUMNS) <= set(base.columns)
    assert set(base["value_basis"]) == {"margin" if costed else "revenue"}

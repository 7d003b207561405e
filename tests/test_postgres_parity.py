"""The same Ibis feature expressions give the same table on DuckDB and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features import engine
from features.config import SourceConfig
from features.synthetic import SyntheticConfig, generate
from features.validate import validate

pytestmark = pytest.mark.postgres

AS_OFS = [dt.date(2023, 6, 1), dt.date(2023, 10, 1)]


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    data = generate(SyntheticConfig(n_customers=400, seed=7))
    cfg = SourceConfig(name="synthetic", format="parquet", path="unused.parquet",
                       columns={c: c for c in ("customer_id", "order_id", "timestamp",
                                               "product_id", "quantity", "price")},
                       derive={"amount": "quantity * price"})
    return validate(data.transactions, cfg).accepted


def run(con, transactions: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    tables = engine.prepare(con, transactions, data_end=dt.date(2024, 1, 1))
    out = engine.feature_table(tables, as_of, horizon_days=90).to_pandas()
    return out.sort_values("customer_id").reset_index(drop=True)


@pytest.mark.parametrize("as_of", AS_OFS, ids=str)
def test_duckdb_and_postgres_agree(transactions, pg_url, as_of):
    duck = run(engine.connect(), transactions, as_of)
    pg = run(engine.connect(pg_url), transactions, as_of)
    assert len(duck) > 100
    assert list(duck.columns) == list(pg.columns)
    for col in duck.columns:
        a, b = duck[col], pg[col]
        if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-9, atol=1e-9,
                                       equal_nan=True, err_msg=col)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), col

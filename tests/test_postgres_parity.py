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


def test_cli_builds_the_same_partitions_on_postgres(tmp_path, pg_url):
    import subprocess
    import sys

    from features.synthetic import write
    from tests.conftest import ROOT

    paths = write(generate(SyntheticConfig(n_customers=200, seed=11)), tmp_path / "src")
    outs = {}
    for name, backend in (("duck", []), ("pg", ["--backend", pg_url])):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "serving.cli", "features", "build", "--source",
             str(paths["transactions"]), "--as-of", "2023-10-01", "--out", str(out), *backend],
            capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        outs[name] = engine.read_features(out)
    pd.testing.assert_frame_equal(outs["duck"], outs["pg"], check_dtype=False, rtol=1e-9)


def test_postgres_source_table_and_query(pg_url):
    import psycopg

    from features.validate import load

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS shop_orders")
        conn.execute("CREATE TABLE shop_orders (cust text, inv text, ts timestamptz, sku text, "
                     "qty int, price numeric)")
        conn.execute("INSERT INTO shop_orders VALUES "
                     "('7', 'i1', '2023-01-02 10:00+02', 'a', 2, 5.5), "
                     "(NULL, 'i2', '2023-01-03 10:00+00', 'a', 1, 5.5), "
                     "('8', 'i3', '2023-01-04 10:00+00', 'b', 1, 0)")
    columns = {"customer_id": "cust", "order_id": "inv", "timestamp": "ts", "product_id": "sku",
               "quantity": "qty", "price": "price"}
    for where in ({"sql_table": "shop_orders"},
                  {"query": "SELECT * FROM shop_orders WHERE sku IN ('a', 'b')"}):
        cfg = SourceConfig(name="pg", format="postgres", url=pg_url, columns=columns,
                           derive={"amount": "quantity * price"}, **where)
        result = load(cfg)
        assert result.counts == {"missing_customer_id": 1, "non_positive_price": 1}
        row = result.accepted.iloc[0]
        assert row["timestamp"] == pd.Timestamp("2023-01-02 08:00")
        assert row["amount"] == pytest.approx(11.0)

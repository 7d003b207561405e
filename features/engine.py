"""Run the feature expressions on a backend and write Parquet partitioned by as_of.

DuckDB (embedded, in memory) is the default; any Ibis backend URL works unchanged, e.g.
`postgresql://user:pw@127.0.0.1:5432/db` (the data is loaded there first).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ibis
import pandas as pd
import pyarrow.parquet as pq
from ibis.backends import BaseBackend

from features import pointintime as pit
from features.contract import TRANSACTIONS
from features.errors import DataError
from features.segments import ValueTiers


def connect(url: str | None = None) -> BaseBackend:
    """An Ibis backend: in-memory DuckDB by default, else `ibis.connect(url)`."""
    if not url or url == "duckdb":
        con = ibis.duckdb.connect()
        con.raw_sql("SET preserve_insertion_order = false")
        return con
    try:
        return ibis.connect(url)
    except Exception as exc:  # noqa: BLE001 - driver errors vary by backend
        raise DataError(f"backend {url.split('@')[-1]}: cannot connect: {exc}") from None


@dataclass
class FeatureTables:
    """The as_of-independent intermediate tables every as_of reads."""

    days: ibis.Table
    products: ibis.Table
    data_end: dt.date


def prepare(con: BaseBackend, transactions: pd.DataFrame, data_end: dt.date | None = None,
            name: str = "transactions") -> FeatureTables:
    """Load canonical transactions and materialise purchase days and first purchases."""
    cols = list(TRANSACTIONS)
    tx = con.create_table(name, transactions[cols], overwrite=True)
    days = con.create_table(f"{name}_days", pit.purchase_days(tx), overwrite=True)
    products = con.create_table(f"{name}_products", pit.first_purchases(tx), overwrite=True)
    if data_end is None:
        last = transactions["timestamp"].max()
        data_end = (pd.Timestamp(last).normalize() + pd.Timedelta(days=1)).date()
    return FeatureTables(days=days, products=products, data_end=data_end)


def feature_table(tables: FeatureTables, as_of: dt.date, horizon_days: int | None,
                  lookback_days: int = 365, tiers: ValueTiers | None = None) -> ibis.Table:
    """The expression for one as_of: features, plus labels when a horizon is given."""
    f = pit.customer_features(tables.days, tables.products, as_of,
                              lookback_days=lookback_days, tiers=tiers)
    if horizon_days:
        f = pit.with_labels(f, tables.days, as_of, horizon_days, tables.data_end)
    return f.order_by("customer_id")


def build(
    con: BaseBackend,
    tables: FeatureTables,
    as_ofs: Sequence[dt.date],
    out_dir: Path,
    *,
    horizon_days: int | None = 90,
    lookback_days: int = 365,
    tiers: ValueTiers | None = None,
    on_done: Callable[[dt.date, int], None] | None = None,
) -> dict[dt.date, Path]:
    """Write one Parquet partition per as_of under out_dir/as_of=YYYY-MM-DD/."""
    written: dict[dt.date, Path] = {}
    for as_of in as_ofs:
        table = con.to_pyarrow(feature_table(tables, as_of, horizon_days, lookback_days, tiers))
        table = table.drop_columns(["as_of"])
        part = out_dir / f"as_of={as_of.isoformat()}"
        if part.exists():
            shutil.rmtree(part)
        part.mkdir(parents=True)
        pq.write_table(table, part / "part-0.parquet")
        written[as_of] = part
        if on_done:
            on_done(as_of, table.num_rows)
    return written


def read_features(out_dir: Path, as_of: dt.date | None = None) -> pd.DataFrame:
    """Read a feature table back (all partitions, or one as_of) with `as_of` as a date column."""
    parts = sorted(Path(out_dir).glob("as_of=*/*.parquet"))
    frames = []
    for path in parts:
        day = dt.date.fromisoformat(path.parent.name.split("=", 1)[1])
        if as_of is None or day == as_of:
            frame = pq.read_table(path).to_pandas()
            frame.insert(1, "as_of", day)
            frames.append(frame)
    if not frames:
        which = f" for as_of {as_of}" if as_of else ""
        raise DataError(f"{out_dir}: no feature partitions{which}")
    return pd.concat(frames, ignore_index=True)

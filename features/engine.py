"""Run the feature expressions on a backend and write Parquet partitioned by as_of.

DuckDB (embedded, in memory) is the default; any Ibis backend URL works unchanged, e.g.
`postgresql://user:pw@127.0.0.1:5432/db` (the data is loaded there first). The Spark engine
(`features.spark`) reads, validates and builds on Spark itself and writes the same layout.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from ibis.backends import BaseBackend

from features import pointintime as pit
from features.contract import feature_input
from features.errors import DataError
from features.segments import ValueTiers

# Where a feature build runs: in this process (DuckDB, or the Ibis backend of --backend) or
# on Spark, which also reads and validates the source.
Engine = Literal["duckdb", "spark"]
ENGINES: tuple[Engine, ...] = get_args(Engine)
DEFAULT_ENGINE: Engine = "duckdb"


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
    tx = con.create_table(name, feature_input(transactions), overwrite=True)
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


def feature_frames(
    transactions: pd.DataFrame,
    as_ofs: Sequence[dt.date],
    *,
    horizon_days: int | None = None,
    lookback_days: int = 365,
    data_end: dt.date | None = None,
    population_only: bool = True,
) -> dict[dt.date, pd.DataFrame]:
    """Feature rows (plus labels with a horizon) per as_of from canonical transactions, on
    in-memory DuckDB; by default only the population (a purchase in the lookback).

    Examples
    --------
    >>> import datetime as dt
    >>> import pandas as pd
    >>> tx = pd.DataFrame({
    ...     "customer_id": ["a", "a", "b"], "order_id": ["1", "2", "3"],
    ...     "timestamp": pd.to_datetime(["2024-01-03", "2024-02-10", "2024-02-20"]),
    ...     "product_id": ["p", "q", "p"], "quantity": [1.0, 2.0, 1.0],
    ...     "amount": [10.0, 25.0, 12.0], "is_return": [False, False, False]})
    >>> rows = feature_frames(tx, [dt.date(2024, 3, 1)])[dt.date(2024, 3, 1)]
    >>> rows[["customer_id", "frequency", "recency", "T"]]
      customer_id  frequency  recency   T
    0           a          1       38  57
    1           b          0        0   9
    """
    con = connect()
    tables = prepare(con, transactions, data_end=data_end)
    frames = {}
    for as_of in sorted(set(as_ofs)):
        frame = feature_table(tables, as_of, horizon_days, lookback_days).to_pandas()
        if population_only:
            frame = frame[frame["in_population"]].reset_index(drop=True)
        frame["as_of"] = as_of
        frames[as_of] = frame
    return frames


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
    """Write one Parquet partition per as_of under out_dir (`partition_dir`), each published
    whole (`publish_partition`): a reader never sees a half-written one."""
    written: dict[dt.date, Path] = {}
    for as_of in as_ofs:
        table = con.to_pyarrow(feature_table(tables, as_of, horizon_days, lookback_days, tiers))
        table = table.drop_columns(["as_of"])
        part = partition_dir(out_dir, as_of)
        publish_partition(table, part)
        written[as_of] = part
        if on_done:
            on_done(as_of, table.num_rows)
    return written


PARTITION_KEY = "as_of"
PARTITION_FILE = "part-0.parquet"


def partition_dir(out_dir: Path, as_of: dt.date) -> Path:
    """The folder of one as_of in a feature table: out_dir/as_of=YYYY-MM-DD/."""
    return Path(out_dir) / f"{PARTITION_KEY}={as_of.isoformat()}"


def publish_partition(table: pa.Table, part: Path) -> None:
    """Write `table` as the partition folder `part`, atomically for readers (`publish_file`)."""
    part.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{part.name}.", suffix=".tmp", dir=part.parent)
    os.close(handle)
    try:
        pq.write_table(table, temp)
        publish_file(Path(temp), part)
    finally:
        Path(temp).unlink(missing_ok=True)


def publish_file(written: Path, part: Path) -> None:
    """Move the Parquet file `written` (on the same file system) into place as the partition
    folder `part`, atomically for readers.

    A new partition is assembled in a hidden sibling folder and renamed into place; an existing
    one gets its file replaced by `os.replace` (readers holding the old file keep reading it),
    and files of an earlier layout are removed only after that.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    if not part.exists():
        staging = Path(tempfile.mkdtemp(prefix=f".{part.name}.", dir=part.parent))
        try:
            os.replace(written, staging / PARTITION_FILE)
            staging.rename(part)
            return
        except OSError:
            if (staging / PARTITION_FILE).exists() and not written.exists():
                os.replace(staging / PARTITION_FILE, written)
            shutil.rmtree(staging, ignore_errors=True)
            if not part.exists():
                raise
    os.replace(written, part / PARTITION_FILE)
    for stale in part.glob("*.parquet"):
        if stale.name != PARTITION_FILE:
            stale.unlink()


def partitions(out_dir: Path) -> dict[dt.date, Path]:
    """as_of -> partition folder of a feature table, oldest first (folders with Parquet only)."""
    found: dict[dt.date, Path] = {}
    for part in Path(out_dir).glob(f"{PARTITION_KEY}=*"):
        if not part.is_dir() or not any(part.glob("*.parquet")):
            continue
        text = part.name.split("=", 1)[1]
        try:
            found[dt.date.fromisoformat(text)] = part
        except ValueError:
            raise DataError(f"{part}: partition name is not {PARTITION_KEY}=YYYY-MM-DD") from None
    return dict(sorted(found.items()))


def read_features(out_dir: Path, as_of: dt.date | None = None) -> pd.DataFrame:
    """Read a feature table back (all partitions, or one as_of) with `as_of` as a date column."""
    frames = []
    for day, part in partitions(out_dir).items():
        if as_of is None or day == as_of:
            for path in sorted(part.glob("*.parquet")):
                with path.open("rb") as handle:  # one handle: a replaced file stays whole
                    frame = pq.read_table(handle).to_pandas()
                frame.insert(1, "as_of", day)
                frames.append(frame)
    if not frames:
        which = f" for as_of {as_of}" if as_of else ""
        raise DataError(f"{out_dir}: no feature partitions{which}")
    return pd.concat(frames, ignore_index=True)

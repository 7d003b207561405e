"""Feature builds on Spark (local[2]): the session, the same table and quarantine as the
DuckDB build, bit-identical repeat runs into the same folder, and one-line errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("pyspark")

from features import engine  # noqa: E402
from features import spark as spark_engine  # noqa: E402
from features.cli import build_cmd  # noqa: E402
from features.config import load_source_config  # noqa: E402
from features.errors import DataError  # noqa: E402
from features.segments import add_value_tier  # noqa: E402
from features.synthetic import SyntheticConfig, generate, write  # noqa: E402
from features.validate import load  # noqa: E402

MASTER = "local[2]"
AS_OFS = "2023-07-01,2024-01-01"
DATES = [dt.date(2023, 7, 1), dt.date(2024, 1, 1)]


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    with spark_engine.session(MASTER, app="retention-tests") as session:
        yield session


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic retailer's transactions (with its dirty rows) and their source config."""
    out = tmp_path_factory.mktemp("synthetic")
    data = generate(SyntheticConfig(n_customers=3000, seed=5, dirty_fraction=0.01))
    return write(data, out)["transactions"]


def build_cli(source: Path, out: Path, engine_name: str = "spark", as_of: str = AS_OFS) -> None:
    """`retention features build` in this process (so it uses the module's Spark session)."""
    build_cmd(source=source, as_of=as_of, out=out, engine_name=engine_name,
              spark_master=MASTER if engine_name == "spark" else None)


@pytest.fixture(scope="module")
def duckdb_out(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("duckdb")
    build_cli(source, out, "duckdb")
    return out


@pytest.fixture(scope="module")
def spark_out(spark, source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spark")
    build_cli(source, out)
    return out


def test_session_runs_a_query_in_utc(spark) -> None:
    row = spark.sql("SELECT timestamp'2024-03-01 00:00:00' AS t, 6 * 7 AS x").collect()[0]
    assert row.x == 42
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert row.t == dt.datetime(2024, 3, 1)


def test_spark_features_equal_duckdb(duckdb_out: Path, spark_out: Path) -> None:
    duck, spark_table = engine.read_features(duckdb_out), engine.read_features(spark_out)
    assert set(engine.partitions(spark_out)) == set(DATES)
    assert list(spark_table.columns) == list(duck.columns)
    assert len(spark_table) == len(duck) > 3000
    for col in duck.columns:
        a, b = duck[col], spark_table[col]
        assert a.dtype == b.dtype, col
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=0, atol=1e-9,
                                       equal_nan=True, err_msg=col)
        else:
            pd.testing.assert_series_equal(b, a, check_names=False, obj=col)


def test_spark_quarantine_equals_pandas(duckdb_out: Path, spark_out: Path) -> None:
    pandas_counts = json.loads((duckdb_out / "_validation" / "validation.json").read_text())
    spark_counts = json.loads((spark_out / "_validation" / "validation.json").read_text())
    assert spark_counts == pandas_counts
    assert sum(pandas_counts["reasons"].values()) > 0
    a = pd.read_parquet(duckdb_out / "_validation" / "quarantine.parquet")
    b = pd.read_parquet(spark_out / "_validation" / "quarantine.parquet")
    assert b["row"].tolist() == a["row"].tolist()
    assert b["reason"].tolist() == a["reason"].tolist()
    assert b.fillna("").astype(str).equals(a.fillna("").astype(str))


def test_second_spark_run_into_the_same_folder_is_bit_identical(source: Path,
                                                                spark_out: Path) -> None:
    first = engine.read_features(spark_out, DATES[0])
    build_cli(source, spark_out, as_of=DATES[0].isoformat())  # validates and computes anew
    again = engine.read_features(spark_out, DATES[0])
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    for part in engine.partitions(spark_out).values():
        assert [p.name for p in part.iterdir()] == [engine.PARTITION_FILE]


def test_csv_and_spark_table_sources_validate_as_in_pandas(spark, source: Path,
                                                           tmp_path: Path) -> None:
    """A CSV source (text, a non-ISO timestamp format, a decimal comma, blanks) and a Spark
    table give pandas' quarantine counts."""
    cfg = load_source_config(source)
    frame = pd.read_parquet(cfg.resolved_path).head(400).astype("string")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"]).dt.strftime("%d/%m/%Y %H:%M")
    frame.loc[3, "timestamp"] = "2023-02-30"
    frame.loc[5, "price"] = "12,50"
    frame.loc[7, "quantity"] = ""
    frame.loc[9, "timestamp"] = "2023-05-01T10:00:00+02:00"
    csv = tmp_path / "tx.csv"
    frame.to_csv(csv, index=False)
    text = yaml.safe_load(source.read_text())
    (tmp_path / "tx.yaml").write_text(yaml.safe_dump(
        {**text, "format": "csv", "path": "tx.csv", "timezone": "Europe/Paris"}))
    csv_cfg = load_source_config(tmp_path / "tx.yaml")
    now = dt.datetime(2024, 6, 1)
    expected = load(csv_cfg, now=now).summary()
    got = spark_engine.validate(spark_engine.read_source(spark, csv_cfg), csv_cfg, now=now)
    assert got.summary() == expected
    assert {"unparsable_timestamp", "decimal_comma", "unparsable_number"} <= set(got.counts)

    spark.read.parquet(str(cfg.resolved_path)).createOrReplaceTempView("tx_table")
    on_table = spark_engine.validate(spark_engine.read_source(spark, cfg, "tx_table"), cfg,
                                     now=now)
    from_file = load(cfg, now=now).summary()
    assert {k: v for k, v in on_table.summary().items() if k != "source"} == {
        k: v for k, v in from_file.items() if k != "source"}


@pytest.mark.parametrize("problem", ["missing file", "missing column", "not parquet",
                                     "postgres", "unknown table", "decimal commas"])
def test_bad_sources_fail_in_one_line(spark, source: Path, tmp_path: Path, problem: str) -> None:
    text = yaml.safe_load(source.read_text())
    table = None
    if problem == "missing file":
        text["path"] = str(tmp_path / "absent.parquet")
    elif problem == "missing column":
        text["columns"]["product_id"] = "sku"
        text["path"] = str(source.parent / text["path"])
    elif problem == "not parquet":
        (tmp_path / "bad.parquet").write_text("customer_id,amount\nc1,3\n")
        text["path"] = "bad.parquet"
    elif problem == "postgres":
        text.update(format="postgres", url="postgresql://127.0.0.1:1/x", sql_table="t")
        del text["path"]
    elif problem == "unknown table":
        table = "no_such_table"
        text["path"] = str(source.parent / text["path"])
    else:
        (tmp_path / "comma.csv").write_text(
            "customer_id,order_id,timestamp,product_id,quantity,price,channel,cost\n"
            + "".join(f"c{i},o{i},2023-01-0{i},p,1,\"2,50\",web,1\n" for i in range(1, 4)))
        text.update(format="csv", path="comma.csv")
    (tmp_path / "src.yaml").write_text(yaml.safe_dump(text))
    cfg = load_source_config(tmp_path / "src.yaml")
    with pytest.raises(DataError) as err:
        spark_engine.validate(spark_engine.read_source(spark, cfg, table), cfg)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    expected = {"missing file": "file not found", "missing column": "missing column 'sku'",
                "not parquet": "not readable by Spark", "postgres": "--engine spark",
                "unknown table": "spark table no_such_table",
                "decimal commas": "decimal commas"}[problem]
    assert expected in message


def test_unknown_engine_is_one_line(source: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--engine: unknown engine 'flink'"):
        build_cli(source, tmp_path, "flink")


def test_spark_options_need_the_spark_engine(source: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--spark-memory: only with --engine spark"):
        build_cmd(source=source, as_of=AS_OFS, out=tmp_path, engine_name="duckdb",
                  spark_memory="4g")


def test_a_local_session_gets_half_the_machine_memory(spark) -> None:
    total_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    heap_mib = int(spark_engine.local_memory().removesuffix("m"))
    assert heap_mib >= 1024
    assert abs(heap_mib - total_kib / 2 / 1024) <= max(1.0, 0.01 * heap_mib)
    assert spark.sparkContext.getConf().get("spark.driver.memory") == spark_engine.local_memory()


def test_value_tiers_past_two_hundred_thousand_customers_equal_duckdb(spark) -> None:
    """Tiers compare rank * 10,000 with the population's share: past 214,748 customers that
    product leaves int32, Spark's rank type, so the comparison must be in int64."""
    import ibis

    n = 250_000
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)],
                          "margin_365d": (np.arange(n) % 997).astype("float64")})
    spark.createDataFrame(frame).createOrReplaceTempView("tier_input")
    on_spark = add_value_tier(ibis.pyspark.connect(spark).table("tier_input"), by="margin_365d")
    on_duckdb = add_value_tier(ibis.memtable(frame), by="margin_365d")
    spark_tiers = on_spark.select("customer_id", "value_tier").to_pandas()
    duck_tiers = ibis.duckdb.connect().execute(on_duckdb.select("customer_id", "value_tier"))
    joined = duck_tiers.merge(spark_tiers, on="customer_id", suffixes=("_duckdb", "_spark"))
    assert len(joined) == n
    assert (joined["value_tier_duckdb"] == joined["value_tier_spark"]).all()
    assert duck_tiers["value_tier"].value_counts()["platinum"] < 0.06 * n

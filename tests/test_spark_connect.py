"""Spark Connect (`sc://`): a real Connect server on loopback, started once for this module by
`.ci/spark-connect.sh` (as a user would, from the pip-installed pyspark) and stopped after,
gives the answers of local[2] and of DuckDB: the feature build and its quarantine, batch scores
with components refitted on Spark's counts, and the training sample's transactions.

RETENTION_TEST_SPARK_REMOTE=sc://host:port uses a server already running instead."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("pyspark")

from features import spark as spark_engine  # noqa: E402
from features.cli import build_cmd  # noqa: E402
from features.config import load_source_config  # noqa: E402
from features.errors import DataError  # noqa: E402
from features.synthetic import SyntheticConfig, generate, write  # noqa: E402
from features.validate import load  # noqa: E402
from tests import test_spark_features as local_features  # noqa: E402
from tests.conftest import ROOT, free_port, run  # noqa: E402
from tests.test_spark_scoring import assert_same, local_scores, tracking  # noqa: E402

SERVER = ROOT / ".ci" / "spark-connect.sh"
REMOTE_ENV = "RETENTION_TEST_SPARK_REMOTE"


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Spark Connect server on loopback (local[2], this interpreter's workers)."""
    if os.environ.get(REMOTE_ENV):
        yield os.environ[REMOTE_ENV]
        return
    env = {**os.environ, "RETENTION_SPARK_CONNECT_PORT": str(free_port()),
           "RETENTION_SPARK_CONNECT_DIR": str(tmp_path_factory.mktemp("spark-connect")),
           "RETENTION_SPARK_CONNECT_CORES": "2", "RETENTION_PYTHON": sys.executable}
    started = subprocess.run(["bash", str(SERVER)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(SERVER), "stop"], env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic retailer of tests/test_spark_features.py, dirty rows included."""
    out = tmp_path_factory.mktemp("synthetic")
    data = generate(SyntheticConfig(n_customers=3000, seed=5, dirty_fraction=0.01))
    return write(data, out)["transactions"]


def test_connect_session_is_utc_and_leaves_the_process_able_to_run_locally(remote) -> None:
    from pyspark.sql.connect.session import SparkSession as ConnectSession
    from pyspark.sql.utils import is_remote

    with spark_engine.session(remote, app="retention-tests") as spark:
        assert isinstance(spark, ConnectSession)
        row = spark.sql("SELECT timestamp'2024-03-01 00:00:00' AS t, 6 * 7 AS x").collect()[0]
        assert row.x == 42 and row.t == dt.datetime(2024, 3, 1)
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
        assert is_remote()
    assert not is_remote() and spark_engine.CONNECT_MODE_ENV not in os.environ


def test_unreachable_connect_server_is_one_line() -> None:
    url = f"sc://127.0.0.1:{free_port()}"
    with (pytest.raises(DataError, match="no Spark Connect server answers at 127.0.0.1"),
          spark_engine.session(url)):
        pass


def test_connect_features_and_quarantine_equal_duckdb(remote, source: Path,
                                                      tmp_path: Path) -> None:
    duckdb_out, connect_out = tmp_path / "duckdb", tmp_path / "connect"
    build_cmd(source=source, as_of=local_features.AS_OFS, out=duckdb_out, engine_name="duckdb",
              spark_master=None)
    # The CLI in its own process, with a relative --out: the server resolves paths in its cwd.
    run("features", "build", "--engine", "spark", "--spark-master", remote, "--source",
        str(source), "--as-of", local_features.AS_OFS, "--out", "connect", cwd=tmp_path)
    local_features.test_spark_features_equal_duckdb(duckdb_out, connect_out)
    local_features.test_spark_quarantine_equals_pandas(duckdb_out, connect_out)


def test_connect_scores_with_refitted_components_equal_local_scores(remote, trained,
                                                                    tmp_path: Path) -> None:
    import shutil

    early = tmp_path / "early"
    part = sorted((trained.home / "snapshot").glob("as_of=*"))[0]
    shutil.copytree(part, early / part.name)
    expected = local_scores(trained, early, tmp_path / "local.parquet")
    text = run("score", "--engine", "spark", "--spark-master", remote, "--features", str(early),
               "--out", str(tmp_path / "connect-scores"), "--tracking-uri", tracking(trained),
               cwd=trained.home)
    assert "refitted" in text and f"{len(expected):,} customers scored" in text
    got = pd.read_parquet(tmp_path / "connect-scores")
    assert_same(expected, got)
    assert got["risk_percentile"].max() == 100.0


def test_connect_training_sample_is_whole_customers_of_the_validated_source(remote,
                                                                            source: Path) -> None:
    from training.spark_frames import sampled_transactions

    cfg = load_source_config(source)
    accepted = load(cfg).accepted
    sample, data_end, customers = sampled_transactions(cfg, 600, master=remote)
    assert customers == accepted["customer_id"].nunique()
    assert data_end == accepted["timestamp"].max().date() + dt.timedelta(days=1)
    chosen = sample["customer_id"].unique()
    assert 500 <= len(chosen) <= 700
    keys = ["customer_id", "timestamp", "order_id", "product_id"]
    theirs = (accepted[accepted["customer_id"].isin(chosen)][list(sample.columns)]
              .astype({c: "string" for c in sample.columns if c.endswith("_id")})
              .sort_values(keys, kind="stable").reset_index(drop=True))
    pd.testing.assert_frame_equal(sample, theirs, check_dtype=False)
    assert spark_engine.CONNECT_MODE_ENV not in os.environ

"""`retention score --engine spark` gives the answers of `retention score` for every customer
and every column: on the snapshot at the model's data end (registered components) and on an
earlier one (components refitted on its population from Spark's counts), Spark local[2]."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import BIN, clean_env, run

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def spark():
    from features.spark import session

    with session("local[2]", app="test-spark-scoring") as spark:
        # Small Arrow batches: every score must be independent of how rows are batched.
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "97")
        yield spark


def local_scores(trained, features: Path, out: Path) -> pd.DataFrame:
    run("score", "--features", str(features), "--out", str(out), "--tracking-uri",
        tracking(trained), cwd=trained.home)
    return pd.read_parquet(out)


def tracking(trained) -> str:
    return f"sqlite:///{trained.home / 'mlruns' / 'mlflow.db'}"


def assert_same(expected: pd.DataFrame, got: pd.DataFrame) -> None:
    """Same customers, columns (in order) and values: numbers to TOLERANCE, text exactly;
    both ranked by value at risk."""
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected) and got["customer_id"].is_unique
    assert got["value_at_risk"].is_monotonic_decreasing
    exp = expected.set_index("customer_id").sort_index()
    out = got.set_index("customer_id").sort_index()
    assert out.index.equals(exp.index)
    differing = {}
    for col in exp.columns:
        a, b = exp[col], out[col]
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            a, b = a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64")
            same = (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= TOLERANCE)
        else:
            same = (a.isna() & b.isna()) | (a.astype(object) == b.astype(object)).to_numpy()
        if not np.all(same):
            differing[col] = int((~np.asarray(same)).sum())
    assert not differing, f"columns differing (customers): {differing}"


def test_spark_scores_equal_local_scores_at_the_data_end(trained, tmp_path):
    features = trained.home / "snapshot"
    expected = local_scores(trained, features, tmp_path / "local.parquet")
    out = tmp_path / "spark-scores"
    text = run("score", "--engine", "spark", "--spark-master", "local[2]", "--features",
               str(features), "--out", str(out), "--tracking-uri", tracking(trained),
               cwd=trained.home)
    assert f"{len(expected):,} customers scored" in text and "refitted" not in text
    assert len(list(out.glob("*.parquet"))) >= 1
    assert_same(expected, pd.read_parquet(out))


def test_spark_refits_components_on_an_earlier_population_as_local_scoring_does(
        trained, spark, tmp_path):
    from serving import spark_scoring
    from serving.config import RiskBands
    from serving.state import champion
    from training import registry

    early = tmp_path / "early"
    part = sorted((trained.home / "snapshot").glob("as_of=*"))[0]
    shutil.copytree(part, early / part.name)
    expected = local_scores(trained, early, tmp_path / "local.parquet")
    registry.configure(tracking(trained))
    version, _ = champion("champion")
    refits = []
    count, where = spark_scoring.run(early, str(tmp_path / "spark-scores"),
                                     RiskBands(high=0.6, medium=0.3), version,
                                     on_refit=lambda *args: refits.append(args))
    assert refits and str(refits[0][0]) == part.name.split("=")[1]
    assert count == len(expected)
    got = pd.read_parquet(where)
    assert_same(expected, got)
    # the percentile ranks the whole population, not a batch: the riskiest is at 100
    assert got["risk_percentile"].max() == 100.0 and got["risk_percentile"].nunique() > 50


def test_spark_engine_refuses_what_it_cannot_write(trained):
    cases = ((["--engine", "spark", "--out", "postgresql://u@127.0.0.1/db"], "Parquet folder"),
             (["--engine", "dask", "--out", "x.parquet"], "--engine"))
    for args, said in cases:
        bad = subprocess.run([str(BIN / "retention"), "score", "--features",
                              str(trained.home / "snapshot"), *args, "--tracking-uri",
                              tracking(trained)], cwd=trained.home, capture_output=True,
                             text=True, env=clean_env(), timeout=300)
        assert bad.returncode == 2 and said in bad.stderr, bad.stderr[-2000:]
        assert "Traceback" not in bad.stderr

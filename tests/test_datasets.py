"""The real datasets in ../shared/datasets: row accounting, coverage and the lifetimes summary."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pandas as pd
import pytest

from features import engine
from features.config import load_source_config
from features.validate import load
from tests.conftest import ROOT, SOURCES

pytestmark = pytest.mark.datasets


@pytest.fixture(scope="module")
def retail_features(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("retail")
    proc = subprocess.run(
        [sys.executable, "-m", "serving.cli", "features", "build",
         "--source", str(SOURCES / "online_retail_ii.yaml"), "--as-of", "2011-09-10",
         "--horizon", "90d", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_online_retail_accounts_for_every_row(retail_features):
    counts = json.loads((retail_features / "_validation" / "validation.json").read_text())
    assert counts["rows_in"] == 1_067_370
    assert counts["accepted"] + counts["quarantined"] == 1_067_370
    assert counts["reasons"]["missing_customer_id"] == 243_007
    assert sum(counts["reasons"].values()) == counts["quarantined"]
    quarantine = pd.read_parquet(retail_features / "_validation" / "quarantine.parquet")
    assert len(quarantine) == counts["quarantined"]
    assert quarantine["row"].is_unique


def test_online_retail_features_cover_every_customer_with_a_purchase(retail_features):
    cfg = load_source_config(SOURCES / "online_retail_ii.yaml")
    accepted = load(cfg).accepted
    before = accepted[(accepted["timestamp"] < "2011-09-10") & ~accepted["is_return"]]
    features = engine.read_features(retail_features, dt.date(2011, 9, 10))
    assert set(features["customer_id"]) == set(before["customer_id"])
    assert features["customer_id"].is_unique
    assert features["label_complete"].all()
    lab = accepted[(accepted["timestamp"] >= "2011-09-10") & (accepted["timestamp"] < "2011-12-09")]
    buyers = set(lab.loc[~lab["is_return"], "customer_id"])
    assert set(features.loc[~features["churned"], "customer_id"]) == buyers & set(
        features["customer_id"])


def test_cdnow_summary_equals_lifetimes(datasets):
    from lifetimes.utils import summary_data_from_transaction_data

    as_of = dt.date(1997, 10, 1)
    accepted = load(load_source_config(SOURCES / "cdnow.yaml")).accepted
    cut = accepted[accepted["timestamp"] < pd.Timestamp(as_of)]
    theirs = summary_data_from_transaction_data(
        cut.astype({"customer_id": object}), "customer_id", "timestamp",
        monetary_value_col="amount", observation_period_end=pd.Timestamp(as_of) - pd.Timedelta(
            days=1), freq="D")
    tables = engine.prepare(engine.connect(), accepted)
    ours = engine.feature_table(tables, as_of, horizon_days=None).to_pandas()
    ours = ours.set_index("customer_id").loc[theirs.index]
    assert len(ours) == len(theirs) == 23_570
    for col in ("frequency", "recency", "T"):
        assert (ours[col].to_numpy() == theirs[col].to_numpy()).all(), col
    pd.testing.assert_series_equal(ours["monetary_value"], theirs["monetary_value"],
                                   check_names=False, check_index=False, rtol=1e-9)

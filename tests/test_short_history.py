"""A shop with four months of history and a 28-day horizon trains, evaluates and registers."""

from __future__ import annotations

import datetime as dt

import mlflow
import pytest

from features.config import SourceConfig
from features.errors import DataError
from features.synthetic import SyntheticConfig, generate
from features.validate import validate
from training import registry
from training.data import min_history_days, plan_cutoffs
from training.report import figures
from training.train import TrainConfig, train

START, END = dt.date(2023, 9, 3), dt.date(2024, 1, 1)  # 120 days


def test_the_history_a_cutoff_needs_follows_from_the_horizon():
    assert min_history_days(28) == 28
    assert min_history_days(90) == 90
    assert min_history_days(365) == 120
    with pytest.raises(DataError, match=r"need at least 127 days of data"):
        plan_cutoffs(START, START + dt.timedelta(days=100), 42)


def test_four_months_and_a_28_day_horizon_train_evaluate_and_register(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = generate(SyntheticConfig(n_customers=800, seed=4, start=START, end=END))
    cfg = SourceConfig(name="short", format="parquet", path="unused.parquet",
                       columns={c: c for c in ("customer_id", "order_id", "timestamp",
                                               "product_id", "quantity", "price")},
                       derive={"amount": "quantity * price"})
    tx = validate(data.transactions, cfg).accepted
    assert (tx["timestamp"].max() - tx["timestamp"].min()).days < 121
    config = TrainConfig(horizon_days=28, n_estimators=20)
    result = train(tx, config, data_end=END)
    cut = result.cutoffs
    assert len(cut.train) >= 1 and cut.test == END - dt.timedelta(days=28)
    assert all(d + dt.timedelta(days=28) <= cut.test for d in cut.final_train)
    assert 0.5 < result.metrics["ours"]["churn.roc_auc"] <= 1.0
    registry.configure(home=tmp_path / "mlruns")
    lineage = {"source": "short", "rows": len(tx), "digest": "x", "as_of": str(END),
               "horizon_days": 28}
    run_id, version = registry.log_training(result, config, lineage, figures(result))
    assert mlflow.get_run(run_id).data.params["horizon_days"] == "28"
    assert version == "1"

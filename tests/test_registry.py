"""MLflow: a run with its plots and lineage, the registered pyfunc, promote and roll back;
the same against a real `mlflow server` backed by PostgreSQL; the model-report notebook."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.test_training import synthetic_transactions
from training import registry
from training.report import figures
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained():
    tx = synthetic_transactions(1500, seed=9)
    cfg = TrainConfig(n_estimators=60)
    return cfg, train(tx, cfg, data_end=dt.date(2024, 1, 1)), tx


def log(trained, uri=None, home=None):
    cfg, result, tx = trained
    registry.configure(uri, home=home)
    lineage = {"source": "synthetic", "rows": len(tx), "digest": "abc", "as_of": "x",
               "horizon_days": 90}
    return registry.log_training(result, cfg, lineage, figures(result))


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "mlruns"


def test_run_logs_metrics_plots_card_and_a_challenger(trained, store):
    run_id, version = log(trained, home=store)
    run = mlflow.get_run(run_id)
    assert run.data.metrics["ours.churn.roc_auc"] > 0.5
    assert "recency_rule.churn.roc_auc" in run.data.metrics
    assert run.data.params["lineage_digest"] == "abc"
    files = {a.path for a in MlflowClient().list_artifacts(run_id, "plots")}
    assert {"plots/churn_lift_gain.png", "plots/purchases_tracking.png",
            "plots/value_interval.png"} <= files
    assert "grade" in mlflow.artifacts.load_text(f"runs:/{run_id}/model_card.md")
    assert str(registry._version(registry.CHALLENGER).version) == version


def test_registered_pyfunc_scores_feature_rows_like_the_scorer(trained, store):
    _, result, _ = trained
    log(trained, home=store)
    registry.promote()
    model = registry.load_champion()
    rows = result.test[result.scorer.input_columns].head(8)
    got = model.predict(rows)
    want = result.scorer.score(rows)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)


def test_promote_gates_force_and_rollback(trained, store):
    _, v1 = log(trained, home=store)
    assert registry.promote() == f"champion is now v{v1}"
    _, v2 = log(trained, home=store)
    tags = registry._version(registry.CHALLENGER).tags
    assert tags["vs_champion_version"] == v1  # the champion scored on v2's test cutoff
    assert float(tags["vs_champion_churn_roc_auc"]) == pytest.approx(float(tags["churn_roc_auc"]))
    assert float(tags["vs_champion_purchases_mae"]) == pytest.approx(float(tags["purchases_mae"]))
    kept = registry.promote()
    assert kept.startswith(f"kept champion v{v1}") and "does not improve" in kept
    assert "both scored on the challenger's test cutoff" in kept
    assert registry.promote(force=True) == f"champion is now v{v2} (was v{v1}) [forced]"
    assert registry._version(registry.CHAMPION).tags["promoted_forced"] == "true"
    assert registry.rollback() == f"champion is now v{v1} (rolled back from v{v2})"
    assert str(registry._version(registry.CHAMPION).version) == v1


def test_no_head_to_head_with_a_champion_that_saw_the_test_window(trained, store):
    _, v1 = log(trained, home=store)
    registry.promote()
    MlflowClient().set_model_version_tag(registry.MODEL_NAME, v1, "test_as_of", "2099-01-01")
    log(trained, home=store)
    tags = registry._version(registry.CHALLENGER).tags
    assert not any(k.startswith(registry.VS) for k in tags)
    assert "each on its own test cutoff" in registry.promote()


def test_gate_rules():
    old = {"churn_roc_auc": "0.80", "purchases_mae": "1.00"}
    assert registry.compare({"churn_roc_auc": "0.81", "purchases_mae": "1.00"}, old) == ""
    assert "worse on churn_roc_auc" in registry.compare(
        {"churn_roc_auc": "0.79", "purchases_mae": "0.90"}, old)
    assert "worse on purchases_mae" in registry.compare(
        {"churn_roc_auc": "0.85", "purchases_mae": "1.05"}, old)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.postgres
def test_real_mlflow_server_backed_by_postgres(trained, pg_url, tmp_path, monkeypatch):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS mlflow_test")
        conn.execute("CREATE DATABASE mlflow_test")
    backend = pg_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"{backend}/mlflow_test", "--artifacts-destination", (tmp_path / "art").as_uri(),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("w"))  # noqa: SIM115
    try:
        uri = f"http://127.0.0.1:{port}"
        for _ in range(180):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        run_id, version = log(trained, uri=uri)
        assert registry.promote() == f"champion is now v{version}"
        assert mlflow.get_run(run_id).data.metrics["ours.purchases.mae"] > 0
        _, result, _ = trained
        rows = result.test[result.scorer.input_columns].head(3)
        assert len(registry.load_champion().predict(rows)) == 3
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/mlflow_test") as conn:
            count = conn.execute("SELECT count(*) FROM model_versions").fetchone()[0]
        assert count == 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_model_report_notebook_executes(trained, store, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    log(trained, home=store)
    nb = nbformat.read(ROOT / "notebooks" / "model_report.ipynb", as_version=4)
    env_home = os.environ.get("RETENTION_HOME")
    os.environ["RETENTION_HOME"] = str(store.parent)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if env_home is None:
            os.environ.pop("RETENTION_HOME", None)
        else:
            os.environ["RETENTION_HOME"] = env_home
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6

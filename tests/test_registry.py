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
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from tests.conftest import fresh_pg_database
from tests.test_training import synthetic_transactions
from training import registry
from training.registry import Alias, RegisteredModel
from training.report import figures
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained():
    tx = synthetic_transactions(1500, seed=9)
    cfg = TrainConfig(n_estimators=60)
    return cfg, train(tx, cfg, data_end=dt.date(2024, 1, 1)), tx


def aliased(alias, model=RegisteredModel.SCORER):
    return registry.aliased_version(model, alias)


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
    assert str(aliased(Alias.CHALLENGER).version) == version


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
    tags = aliased(Alias.CHALLENGER).tags
    assert tags["vs_champion_version"] == v1  # the champion scored on v2's test cutoff
    assert float(tags["vs_champion_churn_roc_auc"]) == pytest.approx(float(tags["churn_roc_auc"]))
    assert float(tags["vs_champion_purchases_mae"]) == pytest.approx(float(tags["purchases_mae"]))
    kept = registry.promote()
    assert kept.startswith(f"kept champion v{v1}") and "does not improve" in kept
    assert "both scored on the challenger's test cutoff" in kept
    assert registry.promote(force=True) == f"champion is now v{v2} (was v{v1}) [forced]"
    assert aliased(Alias.CHAMPION).tags["promoted_forced"] == "true"
    assert registry.rollback() == f"champion is now v{v1} (rolled back from v{v2})"
    assert str(aliased(Alias.CHAMPION).version) == v1


def test_no_head_to_head_with_a_champion_that_saw_the_test_window(trained, store):
    _, v1 = log(trained, home=store)
    registry.promote()
    MlflowClient().set_model_version_tag(RegisteredModel.SCORER, v1, "test_as_of", "2099-01-01")
    log(trained, home=store)
    tags = aliased(Alias.CHALLENGER).tags
    assert not any(k.startswith(registry.VS) for k in tags)
    assert "each on its own test cutoff" in registry.promote()


def test_gate_rules():
    old = {"churn_roc_auc": "0.80", "purchases_mae": "1.00"}
    assert registry.compare({"churn_roc_auc": "0.81", "purchases_mae": "1.00"}, old) == ""
    assert "worse on churn_roc_auc" in registry.compare(
        {"churn_roc_auc": "0.79", "purchases_mae": "0.90"}, old)
    assert "worse on purchases_mae" in registry.compare(
        {"churn_roc_auc": "0.85", "purchases_mae": "1.05"}, old)


def test_uplift_gate_rules():
    gates = registry.GATES[RegisteredModel.UPLIFT]
    old = {"qini_auc": "0.100", "uplift_at_30": "0.050"}
    assert registry.compare({"qini_auc": "0.101", "uplift_at_30": "0.049"}, old, gates) == ""
    assert "worse on qini_auc" in registry.compare(
        {"qini_auc": "0.090", "uplift_at_30": "0.060"}, old, gates)
    assert "lacks the uplift_at_30 tag" in registry.compare({"qini_auc": "0.2"}, old, gates)


def models(*args: str) -> str:
    """`retention models ...` on the store `registry.configure` chose; what it printed."""
    from typer.testing import CliRunner

    from training.cli import models_app

    result = CliRunner().invoke(models_app, [*args, "--tracking-uri", mlflow.get_tracking_uri()])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def one_line(text: str) -> str:
    return " ".join(text.split())


def listed_aliases(output: str) -> dict[int, str]:
    """version -> aliases, from the table `retention models list` prints (every version of
    these tests carries an alias)."""
    header, *rows = output.splitlines()
    assert header.split()[:2] == ["version", "aliases"]
    return {int(row.split()[0]): row.split()[1] for row in rows}


def test_list_shows_each_versions_aliases(trained, store):
    _, v1 = log(trained, home=store)
    registry.promote()
    _, v2 = log(trained, home=store)
    table = registry.list_versions()
    assert table["version"].tolist() == [int(v1), int(v2)]
    assert table["aliases"].tolist() == ["champion", "challenger"]
    assert list(table.columns) == ["version", "aliases", "run_id", "churn_roc_auc",
                                   "purchases_mae", "test_as_of"]
    held = MlflowClient().get_registered_model(RegisteredModel.SCORER).aliases
    assert {alias: str(version) for alias, version in held.items()} == {
        "champion": v1, "challenger": v2}
    assert listed_aliases(models("list")) == {int(v1): "champion", int(v2): "challenger"}
    assert one_line(models("list", "--model", "uplift")) == "uplift: no registered versions"


def test_a_model_option_outside_the_registry_is_one_clear_error(store):
    from typer.testing import CliRunner

    from features.errors import DataError
    from training.cli import models_app

    result = CliRunner().invoke(models_app, ["list", "--model", "scorer"])
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == ("--model: 'scorer' is not one of customer-scorer, "
                                     "uplift")


@pytest.fixture(scope="module")
def uplift_run():
    """An uplift model of a randomised toy campaign: the offer lifts conversion where x0 = 1."""
    from training.models.uplift import XLearner
    from training.uplift.job import train_uplift

    rng = np.random.default_rng(0)
    n = 600
    features = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)],
                             "x0": rng.integers(0, 2, n).astype(float),
                             "x1": rng.normal(size=n)})
    treated = rng.random(n) < 0.5
    converted = rng.random(n) < 0.2 + 0.3 * treated * features["x0"].to_numpy()
    log = pd.DataFrame({"customer_id": features["customer_id"], "campaign_id": "k1",
                        "offer_id": np.where(treated, "winback", ""),
                        "arm": np.where(treated, "treatment", "control"),
                        "converted": converted.astype(float)})
    return train_uplift(log, features, dt.date(2024, 1, 1), "converted",
                        learner=XLearner(n_estimators=20, max_depth=2))


def test_uplift_promote_rollback_and_list_through_the_cli(uplift_run, store):
    registry.configure(home=store)
    _, v1 = registry.log_uplift(uplift_run, "toy campaign", {})
    assert one_line(models("promote", "--model", "uplift")) == f"champion is now v{v1}"
    _, v2 = registry.log_uplift(uplift_run, "toy campaign", {})
    kept = one_line(models("promote", "--model", "uplift"))
    assert kept == (f"kept champion v{v1}: challenger v{v2} does not improve on any gate "
                    "(each on its own test cutoff; use --force to override)")
    assert one_line(models("promote", "--model", "uplift", "--force")) == (
        f"champion is now v{v2} (was v{v1}) [forced]")
    assert registry.load_uplift()[0] == v2
    assert one_line(models("rollback", "--model", "uplift")) == (
        f"champion is now v{v1} (rolled back from v{v2})")
    assert registry.load_uplift()[0] == v1
    assert aliased(Alias.CHAMPION, RegisteredModel.UPLIFT).tags["restored_from"] == v2

    table = registry.list_versions(RegisteredModel.UPLIFT)
    assert table["aliases"].tolist() == ["champion", "challenger"]
    assert list(table.columns) == ["version", "aliases", "run_id", "qini_auc", "uplift_at_30",
                                   "outcome", "offers"]
    assert table["offers"].tolist() == ["winback", "winback"]
    assert table["qini_auc"].astype(float).tolist() == [
        pytest.approx(uplift_run.metrics["winback.qini_auc"])] * 2
    assert listed_aliases(models("list", "--model", "uplift")) == {
        int(v1): "champion", int(v2): "challenger"}
    assert registry.list_versions().empty  # the scorer's registry is its own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.postgres
def test_real_mlflow_server_backed_by_postgres(trained, pg_url, tmp_path, monkeypatch):
    database = fresh_pg_database(pg_url, "mlflow_test")
    backend = database.replace("postgresql://", "postgresql+psycopg://")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         backend, "--artifacts-destination", (tmp_path / "art").as_uri(),
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
        import psycopg

        with psycopg.connect(database) as conn:
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

"""`retention train recommender`: the recommender trained alone, stored with a customer-scorer
run where the service loads it (`training.registry.load_recommender`)."""

from __future__ import annotations

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from features.errors import DataError
from features.synthetic import NON_PRODUCT, SyntheticConfig, generate, write
from training import registry
from training.cli import train_app
from training.models.recommender import ItemRecommender


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = write(generate(SyntheticConfig(n_customers=300, seed=5)), tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    registry.configure(uri)
    with mlflow.start_run() as run:
        mlflow.set_tag("purpose", "stands for a customer-scorer run")
    return paths["transactions"], uri, run.info.run_id


def _train(*args: str):
    return CliRunner().invoke(train_app, ["recommender", *args])


def test_fitted_alone_and_stored_where_the_service_loads_it(setup) -> None:
    source, uri, run_id = setup
    assert registry.load_recommender(run_id) is None
    result = _train("--source", str(source), "--run-id", run_id, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    model = registry.load_recommender(run_id)
    assert isinstance(model, ItemRecommender)
    assert model.exclude_items == [NON_PRODUCT] and len(model.neighbors_) > 0
    some = str(model.customers_[0])
    assert len(model.recommend([some], k=5)[some]) == 5
    run = MlflowClient().get_run(run_id)
    assert run.data.params["recommender_min_support"] == str(model.min_support)
    assert run.data.metrics["stage_seconds.recommender"] >= 0

    # A refit with other settings (no non-product codes) replaces the model; the param
    # MLflow keeps write-once stays, the new value is a tag.
    doc = yaml.safe_load(source.read_text())
    doc.pop("non_product_codes")
    other = source.with_name("all_codes.yaml")
    other.write_text(yaml.safe_dump(doc))
    result = _train("--source", str(other), "--run-id", run_id, "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert registry.load_recommender(run_id).exclude_items == []
    run = MlflowClient().get_run(run_id)
    assert run.data.params["recommender_exclude_items"] == str([NON_PRODUCT])
    assert run.data.tags["recommender_exclude_items"] == "[]"


def test_without_a_champion_or_with_an_unknown_run_one_clear_error(setup) -> None:
    source, uri, _ = setup
    result = _train("--source", str(source), "--tracking-uri", uri)
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == ("--alias: no customer-scorer version is 'champion'; run "
                                     "`retention train` first or pass --run-id")
    result = _train("--source", str(source), "--run-id", "nope", "--tracking-uri", uri)
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == "--run-id: no MLflow run 'nope'"

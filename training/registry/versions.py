"""Reading the registry: the version an alias points at, and loading what a version holds.

Serving reads the registry only through these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from training.registry.legacy import load_artifact
from training.registry.names import RECOMMENDER_ARTIFACT, Alias, RegisteredModel

if TYPE_CHECKING:
    from training.models.recommender import ItemRecommender
    from training.scorer import CustomerScorer
    from training.uplift.data import CampaignFit


def aliased_version(model: RegisteredModel | str, alias: Alias | str) -> ModelVersion | None:
    """The version of `model` that `alias` points at, None when there is none."""
    try:
        return MlflowClient().get_model_version_by_alias(RegisteredModel(model), alias)
    except MlflowException:
        return None


def load_champion(alias: Alias | str = Alias.CHAMPION) -> mlflow.pyfunc.PyFuncModel:
    """The `customer-scorer` pyfunc of the aliased version."""
    return mlflow.pyfunc.load_model(f"models:/{RegisteredModel.SCORER}@{alias}")


def load_scorer(version: str) -> CustomerScorer:
    """The `CustomerScorer` of one `customer-scorer` version."""
    model = mlflow.pyfunc.load_model(f"models:/{RegisteredModel.SCORER}/{version}")
    return model.unwrap_python_model().scorer


def load_uplift(alias: Alias | str = Alias.CHAMPION) -> tuple[str, CampaignFit] | None:
    """(version, CampaignFit) of the aliased `uplift` model, or None when there is none."""
    v = aliased_version(RegisteredModel.UPLIFT, alias)
    if v is None:
        return None
    model = mlflow.pyfunc.load_model(f"models:/{RegisteredModel.UPLIFT}/{v.version}")
    return str(v.version), model.unwrap_python_model().fit


def load_recommender(run_id: str) -> ItemRecommender | None:
    """The item recommender logged with a `customer-scorer` run, None if the run has none."""
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path=RECOMMENDER_ARTIFACT)
    except (MlflowException, OSError):
        return None
    return load_artifact(path)

"""The two MLflow pyfunc wrappers the registry stores, and the environment logged with them.

A registered model pickles its wrapper class by name: the wrappers are named by their public
path, `training.registry.ScorerModel` and `training.registry.UpliftPyfunc`, which earlier
versions pickled too, so that moving this file never breaks a registered model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mlflow
import pandas as pd

from training.registry.legacy import load_artifact

if TYPE_CHECKING:
    from training.scorer import CustomerScorer
    from training.uplift.data import CampaignFit


class ScorerModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: feature rows in, every score out (`CustomerScorer.score`).

    Its artifact `scorer` is the joblib-saved `CustomerScorer`.
    """

    __module__ = "training.registry"  # the pickled path (see the module docstring)
    scorer: CustomerScorer

    def load_context(self, context) -> None:
        self.scorer = load_artifact(context.artifacts["scorer"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.scorer.score(pd.DataFrame(model_input))


class UpliftPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: feature rows in, one estimated uplift column per covered offer out.

    Its artifact `uplift` is the joblib-saved `CampaignFit`.
    """

    __module__ = "training.registry"  # the pickled path (see the module docstring)
    fit: CampaignFit

    def load_context(self, context) -> None:
        self.fit = load_artifact(context.artifacts["uplift"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = pd.DataFrame(model_input)[self.fit.features]
        return self.fit.learner.predict_uplift(rows.reset_index(drop=True))


def requirements() -> list[str]:
    """The project's pinned runtime requirements, for the logged model's environment."""
    from importlib.metadata import requires

    return [r for r in (requires("retention") or []) if "extra ==" not in r]

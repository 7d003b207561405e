"""The two MLflow pyfunc wrappers the registry stores, and the environment logged with them.

A registered model pickles its wrapper class by name: the wrappers are named by their public
path, `training.registry.ScorerModel` and `training.registry.UpliftPyfunc`, which earlier
versions pickled too, so that moving this file never breaks a registered model.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
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


# Distributions the model's code imports that the project's requirements do not name.
DIRECT_IMPORTS: tuple[str, ...] = ("joblib", "cloudpickle")


def code_paths() -> list[str]:
    """The packages a registered model unpickles (`features`, `training`), logged with it as
    MLflow `code_paths`: loading puts them first on the path, so the model answers where
    this project is not installed."""
    root = Path(__file__).resolve().parents[2]
    return [str(root / package) for package in ("features", "training")]


def requirements() -> list[str]:
    """Pinned requirements of the logged model's environment: each distribution that loading
    its code imports (in a fresh interpreter, so that whatever else this process loaded does
    not count) among the project's requirements and `DIRECT_IMPORTS`, at the installed
    version."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, requires, version

    done = subprocess.run([sys.executable, "-c", _LOADED], capture_output=True, text=True,
                          check=True)
    modules = set(done.stdout.split())
    declared = {_name(r) for r in (requires("retention") or []) if "extra ==" not in r}
    wanted = declared | {_name(d) for d in DIRECT_IMPORTS}
    loaded = {_name(dist) for module, dists in packages_distributions().items()
              if module in modules for dist in dists}
    pins = []
    for dist in sorted(wanted & loaded):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    return pins


# What a registered model imports: the wrappers, a scorer and an uplift fit when unpickled,
# and the compiled loops its big batches load on first use.
_LOADED = """
import sys
import joblib, cloudpickle
import training.registry.pyfunc, training.scorer, training.uplift.data, training.models.kernels
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _name(requirement: str) -> str:
    """A distribution's normalised name, from a requirement string or a name."""
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")

"""Shared base of the XGBoost models: hyper-parameters, feature columns, boundary checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator


class BoostedModel(BaseEstimator):
    """XGBoost on a fixed list of feature columns; subclasses choose the objective."""

    objective: str = "reg:squarederror"

    def __init__(self, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8,
                 min_child_weight: float = 5.0, random_state: int = 0, n_jobs: int = 2) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _params(self) -> dict[str, object]:
        return dict(n_estimators=self.n_estimators, max_depth=self.max_depth,
                    learning_rate=self.learning_rate, subsample=self.subsample,
                    colsample_bytree=self.colsample_bytree,
                    min_child_weight=self.min_child_weight, random_state=self.random_state,
                    n_jobs=self.n_jobs, objective=self.objective, tree_method="hist")

    def _matrix(self, X: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
        columns = list(columns if columns is not None else self.feature_names_in_)
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise ValueError(f"X: missing feature columns {missing}")
        return X[columns].astype("float64")

    @staticmethod
    def _target(y: object, name: str, n: int) -> np.ndarray:
        y = np.asarray(y, dtype="float64")
        if y.shape != (n,):
            raise ValueError(f"{name}: expected {n} values, got shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        return y

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """XGBoost's TreeSHAP contributions per feature (margin units), plus `bias`."""
        booster = self.model_.get_booster()
        matrix = xgb.DMatrix(self._matrix(X), feature_names=list(self.feature_names_in_))
        contrib = booster.predict(matrix, pred_contribs=True)
        return pd.DataFrame(contrib, columns=[*self.feature_names_in_, "bias"], index=X.index)

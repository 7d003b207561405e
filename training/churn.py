"""Churn classifier: XGBoost with isotonic calibration learned on out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import GroupKFold

from training.boosted import BoostedModel


class ChurnClassifier(BoostedModel):
    """P(no purchase in the horizon). One booster serves scores and TreeSHAP reasons; an
    isotonic map fitted on out-of-fold scores (folds = cutoffs when several) calibrates it."""

    objective = "binary:logistic"

    def fit(self, X: pd.DataFrame, y: object, groups: object | None = None) -> ChurnClassifier:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        y = self._target(y, "y", len(X))
        if set(np.unique(y)) - {0.0, 1.0}:
            raise ValueError("y: churn labels must be 0 or 1")
        matrix = self._matrix(X)
        oof = np.full(len(X), np.nan)
        groups = np.asarray(groups) if groups is not None else np.arange(len(X)) % 3
        n_splits = min(3, len(np.unique(groups)))
        if n_splits >= 2:
            for tr, te in GroupKFold(n_splits=n_splits).split(matrix, y, groups):
                m = xgb.XGBClassifier(**self._params()).fit(matrix.iloc[tr], y[tr])
                oof[te] = m.predict_proba(matrix.iloc[te])[:, 1]
        self.model_ = xgb.XGBClassifier(**self._params()).fit(matrix, y)
        if np.isnan(oof).any():
            oof = self.model_.predict_proba(matrix)[:, 1]
        self.calibrator_ = IsotonicRegression(y_min=0.001, y_max=0.999, out_of_bounds="clip")
        self.calibrator_.fit(oof, y)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated churn probability per row."""
        raw = self.model_.predict_proba(self._matrix(X))[:, 1]
        return self.calibrator_.predict(raw)

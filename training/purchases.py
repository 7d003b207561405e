"""Expected purchases (distinct purchase days) in the horizon: XGBoost with a Poisson loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from training.boosted import BoostedModel


class PurchasesRegressor(BoostedModel):
    """E[purchase days in H | features]; Poisson deviance suits counts and keeps them >= 0."""

    objective = "count:poisson"

    def fit(self, X: pd.DataFrame, y: object) -> PurchasesRegressor:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        y = self._target(y, "y", len(X))
        if (y < 0).any():
            raise ValueError("y: purchase counts must be >= 0")
        self.model_ = xgb.XGBRegressor(**self._params()).fit(self._matrix(X), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(self._matrix(X)).astype("float64")

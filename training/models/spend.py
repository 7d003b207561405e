"""Expected spend in the horizon: XGBoost with a Tweedie loss (many zeros, long right tail)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from training.models.boosted import BoostedModel


class SpendRegressor(BoostedModel):
    """E[net spend in H | features]; negative net spend (refunds) is trained as 0."""

    objective = "reg:tweedie"

    def fit(self, X: pd.DataFrame, y: object) -> SpendRegressor:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        y = np.clip(self._target(y, "y", len(X)), 0.0, None)
        self.model_ = xgb.XGBRegressor(**self._params(), tweedie_variance_power=1.3)
        self.model_.fit(self._matrix(X), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(self._matrix(X)).astype("float64")

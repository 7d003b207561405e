"""Expected purchases (distinct purchase days) in the horizon: XGBoost with a Tweedie loss."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import xgboost as xgb

from training.models.boosted import TweedieRegressor


class PurchasesRegressor(TweedieRegressor):
    """E[purchase days in H | features], kept >= 0 by the log link.

    Tweedie deviance rather than Poisson: purchase counts are overdispersed (most customers 0,
    a few wholesalers dozens), and the Tweedie variance lets the few large counts pull the
    trees less.

    Hyper-parameters: those of `BoostedModel`, plus `tweedie_variance_power` (between 1,
    Poisson, and 2, Gamma; 1.5 is XGBoost's own default).
    Learned: `model_`, `n_features_in_`, `feature_names_in_` (DataFrame fits only).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(300, 2))
    >>> y = rng.poisson(4 * X[:, 0])
    >>> model = PurchasesRegressor(n_estimators=50, learning_rate=0.3).fit(X, y)
    >>> low, high = model.predict([[0.1, 0.5], [0.9, 0.5]])
    >>> bool(0 <= low < 1 < high)
    True
    """

    def __init__(self, *, tweedie_variance_power: float = 1.5, n_estimators: int = 300,
                 max_depth: int = 4, learning_rate: float = 0.05, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, min_child_weight: float = 5.0,
                 random_state: int = 0, n_jobs: int = 2) -> None:
        super().__init__(n_estimators=n_estimators, max_depth=max_depth,
                         learning_rate=learning_rate, subsample=subsample,
                         colsample_bytree=colsample_bytree, min_child_weight=min_child_weight,
                         random_state=random_state, n_jobs=n_jobs)
        self.tweedie_variance_power = tweedie_variance_power

    def fit(self, X: npt.ArrayLike | pd.DataFrame, y: npt.ArrayLike) -> PurchasesRegressor:
        """Fit on feature rows X and purchase counts y (>= 0)."""
        matrix, y = self._fit_data(X, y, y_numeric=True)
        if (y < 0).any():
            raise ValueError("y: purchase counts must be >= 0")
        self.model_ = xgb.XGBRegressor(**self._xgb_params()).fit(matrix, y)
        return self

    def predict(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """Expected purchase days in the horizon per row."""
        return self._forecast(X)

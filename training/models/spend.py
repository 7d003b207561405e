"""Expected spend in the horizon: XGBoost with a Tweedie loss (many zeros, long right tail)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import xgboost as xgb

from training.models.boosted import TweedieRegressor


class SpendRegressor(TweedieRegressor):
    """E[net spend in H | features]; negative net spend (refunds) is trained as 0.

    Hyper-parameters: those of `BoostedModel`, plus `tweedie_variance_power` (between 1,
    Poisson, and 2, Gamma).
    Learned: `model_`, `n_features_in_`, `feature_names_in_` (DataFrame fits only).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(300, 2))
    >>> y = rng.gamma(2.0, 50.0, 300) * (rng.uniform(size=300) < X[:, 0])
    >>> model = SpendRegressor(n_estimators=50, learning_rate=0.3).fit(X, y)
    >>> low, high = model.predict([[0.1, 0.5], [0.9, 0.5]])
    >>> bool(0 <= low < high)
    True
    """

    def __init__(self, *, tweedie_variance_power: float = 1.3, n_estimators: int = 300,
                 max_depth: int = 4, learning_rate: float = 0.05, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, min_child_weight: float = 5.0,
                 random_state: int = 0, n_jobs: int = 2) -> None:
        super().__init__(n_estimators=n_estimators, max_depth=max_depth,
                         learning_rate=learning_rate, subsample=subsample,
                         colsample_bytree=colsample_bytree, min_child_weight=min_child_weight,
                         random_state=random_state, n_jobs=n_jobs)
        self.tweedie_variance_power = tweedie_variance_power

    def fit(self, X: npt.ArrayLike | pd.DataFrame, y: npt.ArrayLike) -> SpendRegressor:
        """Fit on feature rows X and net spend y (negative values count as 0)."""
        matrix, y = self._fit_data(X, y, y_numeric=True)
        self.model_ = xgb.XGBRegressor(**self._xgb_params()).fit(matrix, np.clip(y, 0.0, None))
        return self

    def predict(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """Expected net spend in the horizon per row."""
        return self._forecast(X)

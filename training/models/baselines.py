"""Baseline models people use today, fitted on whatever columns the caller chooses.

- `RFMLogistic`: logistic regression on log-scaled columns (recency, frequency and monetary
  value in the analyst's classic);
- the recency rule and the BTYD baselines need no model of their own (see `training.evaluate`
  and `training.models.btyd`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted


class RFMLogistic(ClassifierMixin, BaseEstimator):
    """Logistic regression of churn on sign(x) * log(1 + |x|) of each column, standardised.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[5, 10, 900.0], [200, 1, 20.0], [12, 8, 400.0], [300, 1, 15.0]])
    >>> model = RFMLogistic().fit(X, [0, 1, 0, 1])
    >>> model.predict_proba(X)[:, 1].round(2).tolist()
    [0.17, 0.83, 0.17, 0.83]
    """

    def __init__(self, *, C: float = 1.0) -> None:
        self.C = C

    @staticmethod
    def _x(X: npt.ArrayLike) -> np.ndarray:
        x = np.asarray(X, dtype="float64")
        return np.sign(x) * np.log1p(np.abs(x))

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> RFMLogistic:
        """Fit on the columns of X and 0/1 churn labels y."""
        self.model_: Pipeline = make_pipeline(StandardScaler(),
                                              LogisticRegression(C=self.C, max_iter=1000))
        self.model_.fit(self._x(X), np.asarray(y, dtype=int))
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: npt.ArrayLike) -> np.ndarray:
        """(rows, 2): P(class 0) and P(class 1, churn) per row."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(self._x(X))

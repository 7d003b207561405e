"""Baseline models people use today, fitted on whatever columns the caller chooses.

- `RFMLogistic`: logistic regression on log-scaled columns (recency, frequency and monetary
  value in the analyst's classic);
- the recency rule and the BTYD baselines need no model of their own (see `training.evaluate`
  and `training.models.btyd`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


class RFMLogistic(ClassifierMixin, BaseEstimator):
    """Logistic regression of churn on sign(x) * log(1 + |x|) of each column, standardised.

    X is a DataFrame or a 2-D array of finite numbers; a DataFrame with string column names
    sets `feature_names_in_`, and later calls must pass the same columns in the same order.
    Learned: `model_` (scaler and logistic regression), `classes_`, `n_features_in_`,
    `feature_names_in_` (DataFrame fits only).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[5, 10, 900.0], [200, 1, 20.0], [12, 8, 400.0], [300, 1, 15.0]])
    >>> model = RFMLogistic().fit(X, [0, 1, 0, 1])
    >>> model.predict_proba(X)[:, 1].round(2).tolist()
    [0.11, 0.83, 0.2, 0.86]
    >>> model.predict(X).tolist()
    [0, 1, 0, 1]
    >>> model.contributions(X[:1]).round(2).to_dict("records")
    [{'x0': -0.7, 'x1': -0.67, 'x2': -0.7, 'bias': -0.02}]
    """

    def __init__(self, *, C: float = 1.0) -> None:
        self.C = C

    def fit(self, X: npt.ArrayLike | pd.DataFrame, y: npt.ArrayLike) -> RFMLogistic:
        """Fit on the columns of X and churn labels y (e.g. 0 stays, 1 churns)."""
        x, y = validate_data(self, X, y, dtype="float64")
        check_classification_targets(y)
        self.model_: Pipeline = make_pipeline(StandardScaler(),
                                              LogisticRegression(C=self.C, max_iter=1000))
        self.model_.fit(_signed_log(x), y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """(rows, classes): P of each class of `classes_` per row; for 0/1 labels the second
        column is P(churn)."""
        check_is_fitted(self, "model_")
        x = validate_data(self, X, reset=False, dtype="float64")
        return self.model_.predict_proba(_signed_log(x))

    def predict(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """The most probable label of each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def contributions(self, X: npt.ArrayLike | pd.DataFrame) -> pd.DataFrame:
        """Each column's share of the log-odds of the second class, plus `bias`.

        The model is linear in the standardised columns, so a column contributes its
        coefficient times the row's distance from the training mean (on the signed-log scale,
        in standard deviations); `bias` is the intercept, and a row's contributions add up to
        its log-odds, as a booster's TreeSHAP contributions do. Columns are named as at fit
        (x0, x1, ... for an array fit); the index is X's for a DataFrame.
        """
        check_is_fitted(self, "model_")
        index = X.index if isinstance(X, pd.DataFrame) else None
        x = validate_data(self, X, reset=False, dtype="float64")
        scaler, logistic = self.model_[0], self.model_[-1]
        z = scaler.transform(_signed_log(x))
        names = getattr(self, "feature_names_in_", None)
        columns = (list(names) if names is not None
                   else [f"x{j}" for j in range(self.n_features_in_)])
        out = pd.DataFrame(z * logistic.coef_[0], columns=columns, index=index)
        out["bias"] = logistic.intercept_[0]
        return out

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled model; one saved before `classes_` and `n_features_in_` were
        recorded takes them from its fitted pipeline."""
        super().__setstate__(state)
        if "model_" in state:
            self.__dict__.setdefault("classes_", self.model_.classes_)
            self.__dict__.setdefault("n_features_in_", self.model_.n_features_in_)

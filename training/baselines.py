"""The baselines people use today, evaluated in the same run as our models.

- recency rule: "no purchase in X days" (the rule Dynamics 365 CI grades churn against), X chosen
  on the training cutoffs among halvings of 365 days;
- RFM logistic regression on recency, frequency and monetary value;
- BG/NBD and Pareto/NBD (+ Gamma-Gamma for value), fitted at the evaluated cutoff itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RFM_COLUMNS: tuple[str, ...] = ("days_since_last", "orders_365d", "spend_365d")


class RFMLogistic:
    """Logistic regression of churn on log-scaled R, F and M: the analyst's classic."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def _x(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame[list(RFM_COLUMNS)].to_numpy(dtype="float64")
        return np.sign(x) * np.log1p(np.abs(x))

    def fit(self, frame: pd.DataFrame, y: object) -> RFMLogistic:
        self.model_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
        self.model_.fit(self._x(frame), np.asarray(y, dtype=int))
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(self._x(frame))[:, 1]

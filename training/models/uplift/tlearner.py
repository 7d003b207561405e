"""T-learner: one outcome model per arm, uplift = prediction under the arm - under control.

The simplest meta-learner and a strong baseline on randomised data: each arm's model sees only
that arm's customers, so nothing is shared between arms (Künzel et al. 2019, "T-learner").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from training.models.uplift.base import UpliftLearner, check_features


class TLearner(UpliftLearner):
    """One XGBoost model per arm (control included); see `UpliftLearner` for the parameters.

    Learned: `models_` (arm -> fitted model of the outcome under that arm).
    """

    def _fit(self, X: pd.DataFrame, arms: np.ndarray, y: np.ndarray) -> None:
        self.models_ = {arm: self._fit_model(X[arms == arm], y[arms == arm], self.outcome_kind_)
                        for arm in (self.control, *self.treatment_arms_)}

    def _predict_uplift(self, X: pd.DataFrame) -> np.ndarray:
        base = self._predict_model(self.models_[self.control], X)
        return np.column_stack([self._predict_model(self.models_[a], X) - base
                                for a in self.treatment_arms_])

    def predict_outcomes(self, X: Any) -> pd.DataFrame:
        """Expected outcome under each arm, control first (P(y=1) for a binary outcome)."""
        check_is_fitted(self, "models_")
        frame = check_features(X, list(self.feature_names_in_))
        return pd.DataFrame({arm: self._predict_model(m, frame) for arm, m in self.models_.items()},
                            index=frame.index)

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

    Examples
    --------
    A campaign whose e-mail lifts the visit rate by 0.4 where x0 = 1, and not at all elsewhere:

    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> X = pd.DataFrame({"x0": rng.integers(0, 2, 4000), "x1": rng.normal(size=4000)})
    >>> arm = rng.choice(["control", "email"], 4000)
    >>> visit = rng.random(4000) < 0.2 + 0.4 * (arm == "email") * X["x0"]
    >>> model = TLearner(n_estimators=50, max_depth=2).fit(X, arm, visit.astype(int))
    >>> model.predict_uplift(pd.DataFrame({"x0": [0, 1], "x1": [0.0, 0.0]})).round(1)
       email
    0    0.0
    1    0.4
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

"""Class transformation (Jaskowski & Jaroszewicz 2012): one model of a transformed target.

Binary outcome, per treatment arm a (rows of arm a or control, t = 1 for a): Z = 1 when
(t = 1 and y = 1) or (t = 0 and y = 0). With the arms weighted to equal size,
P(Z = 1 | x) = (P(y=1 | a, x) + 1 - P(y=1 | control, x)) / 2, so uplift = 2 P(Z = 1 | x) - 1.
scikit-uplift's `ClassTransformation` is the same model without the weights (it assumes
balanced arms); here rows get weight 0.5 / share of their arm, which is exact for any shares.

Continuous outcome (spend): the transformed-outcome regression (Athey & Imbens 2015),
Y* = y (t - p) / (p (1 - p)) with p the share of arm a, whose conditional mean is the uplift;
unbiased but noisy, so prefer the T- or X-learner for spend.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.models.uplift.base import UpliftLearner


class ClassTransformation(UpliftLearner):
    """One XGBoost model per treatment arm of the transformed target; see `UpliftLearner`.

    Learned: `models_` (arm -> model of Z, or of Y* for a continuous outcome) and `shares_`
    (arm -> share of that arm among its rows and the control rows).

    Examples
    --------
    A campaign whose e-mail lifts the visit rate by 0.4 where x0 = 1, and not at all elsewhere:

    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> X = pd.DataFrame({"x0": rng.integers(0, 2, 4000), "x1": rng.normal(size=4000)})
    >>> arm = rng.choice(["control", "email"], 4000)
    >>> visit = rng.random(4000) < 0.2 + 0.4 * (arm == "email") * X["x0"]
    >>> model = ClassTransformation(n_estimators=50, max_depth=2).fit(X, arm, visit.astype(int))
    >>> model.predict_uplift(pd.DataFrame({"x0": [0, 1], "x1": [0.0, 0.0]})).round(1)
       email
    0    0.0
    1    0.4
    """

    def _fit(self, X: pd.DataFrame, arms: np.ndarray, y: np.ndarray) -> None:
        self.models_ = {}
        self.shares_ = {}
        for arm in self.treatment_arms_:
            rows, t = self._pair(arms, arm)
            p = float(t.mean())
            self.shares_[arm] = p
            yp = y[rows]
            if self.outcome_kind_ == "binary":
                z = (yp * t + (1 - yp) * (1 - t)).astype(np.float64)
                w = np.where(t == 1, 0.5 / p, 0.5 / (1 - p))
                self.models_[arm] = self._fit_model(X[rows], z, "binary", weight=w)
            else:
                ystar = yp * (t - p) / (p * (1 - p))
                self.models_[arm] = self._fit_model(X[rows], ystar, "continuous")

    def _predict_uplift(self, X: pd.DataFrame) -> np.ndarray:
        cols = []
        for arm in self.treatment_arms_:
            pred = self._predict_model(self.models_[arm], X)
            cols.append(2 * pred - 1 if self.outcome_kind_ == "binary" else pred)
        return np.column_stack(cols)

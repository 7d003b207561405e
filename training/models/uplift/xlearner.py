"""X-learner (Künzel, Sekhon, Bickel & Yu 2019): impute each customer's effect, then model it.

Stage 1 fits an outcome model per arm (as the T-learner). Stage 2, per treatment arm a: treated
customers get the imputed effect D = y - mu_control(x), control customers D = mu_a(x) - y, and
one regressor per group learns D from x (tau_a on the treated, tau_0 on the control). The
estimate is tau(x) = e(x) tau_0(x) + (1 - e(x)) tau_a(x), with e(x) the probability of arm a
among customers in arm a or control: the group with more data gets the weight where the other
is scarce, which is why the X-learner helps when arms are unbalanced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from training.models.uplift.base import CONTROL, OutcomeKind, UpliftInputError, UpliftLearner

_CLIP = 0.01  # estimated propensities are kept in [0.01, 0.99]


class XLearner(UpliftLearner):
    """X-learner with XGBoost components; see `UpliftLearner` for the shared parameters.

    `propensity`: "design" (default) uses each arm's share of the training rows, which is the
    assignment probability of a randomised campaign; a mapping {arm: P(arm)} gives the design's
    probabilities directly (control included); "estimate" fits a logistic regression of arm vs
    control on X (standardised, missing values imputed by the mean), for logs where assignment
    depended on the features.
    Learned: `models_` (stage 1, arm -> outcome model), `effect_models_`
    (arm -> (tau_treated, tau_control) regressors), `propensity_` (arm -> float or classifier).

    Examples
    --------
    A campaign whose e-mail lifts the visit rate by 0.4 where x0 = 1, and not at all elsewhere:

    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> X = pd.DataFrame({"x0": rng.integers(0, 2, 4000), "x1": rng.normal(size=4000)})
    >>> arm = rng.choice(["control", "email"], 4000)
    >>> visit = rng.random(4000) < 0.2 + 0.4 * (arm == "email") * X["x0"]
    >>> model = XLearner(n_estimators=50, max_depth=2).fit(X, arm, visit.astype(int))
    >>> model.predict_uplift(pd.DataFrame({"x0": [0, 1], "x1": [0.0, 0.0]})).round(1)
       email
    0    0.0
    1    0.4
    """

    def __init__(
        self,
        *,
        control: str = CONTROL,
        outcome: OutcomeKind = "auto",
        propensity: str | Mapping[str, float] = "design",
        n_estimators: int = 200,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        min_child_weight: float = 1.0,
        subsample: float = 1.0,
        colsample_bytree: float = 1.0,
        reg_lambda: float = 1.0,
        n_jobs: int = 1,
        random_state: int = 0,
    ) -> None:
        super().__init__(control=control, outcome=outcome, n_estimators=n_estimators,
                         max_depth=max_depth, learning_rate=learning_rate,
                         min_child_weight=min_child_weight, subsample=subsample,
                         colsample_bytree=colsample_bytree, reg_lambda=reg_lambda,
                         n_jobs=n_jobs, random_state=random_state)
        self.propensity = propensity

    def _fit(self, X: pd.DataFrame, arms: np.ndarray, y: np.ndarray) -> None:
        known = self._known_propensities()
        self.models_ = {arm: self._fit_model(X[arms == arm], y[arms == arm], self.outcome_kind_)
                        for arm in (self.control, *self.treatment_arms_)}
        mu0 = self._predict_model(self.models_[self.control], X)
        self.effect_models_: dict[str, tuple[Any, Any]] = {}
        self.propensity_: dict[str, Any] = {}
        for arm in self.treatment_arms_:
            rows, t = self._pair(arms, arm)
            Xp, yp = X[rows], y[rows]
            mua = self._predict_model(self.models_[arm], Xp)
            treated = t == 1
            d_treated = yp[treated] - mu0[rows][treated]
            d_control = mua[~treated] - yp[~treated]
            self.effect_models_[arm] = (
                self._fit_model(Xp[treated], d_treated, "continuous"),
                self._fit_model(Xp[~treated], d_control, "continuous"),
            )
            if self.propensity == "estimate":
                clf = make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(),
                                    LogisticRegression(max_iter=1000))
                self.propensity_[arm] = clf.fit(Xp, t)
            elif known is not None:
                self.propensity_[arm] = known[arm] / (known[arm] + known[self.control])
            else:
                self.propensity_[arm] = float(t.mean())

    def _predict_uplift(self, X: pd.DataFrame) -> np.ndarray:
        cols = []
        for arm in self.treatment_arms_:
            tau_t, tau_c = self.effect_models_[arm]
            e = self.propensity_[arm]
            if isinstance(e, Pipeline):
                e = np.clip(e.predict_proba(X)[:, 1], _CLIP, 1 - _CLIP)
            cols.append(e * self._predict_model(tau_c, X)
                        + (1 - e) * self._predict_model(tau_t, X))
        return np.column_stack(cols)

    def _known_propensities(self) -> dict[str, float] | None:
        """The design's P(arm) from a mapping, checked; None for "design"/"estimate"."""
        p = self.propensity
        if isinstance(p, str):
            if p not in ("design", "estimate"):
                raise UpliftInputError(
                    f"propensity: {p!r} is not 'design', 'estimate' or a mapping arm -> P(arm)")
            return None
        if not isinstance(p, Mapping):
            raise UpliftInputError("propensity: expected 'design', 'estimate' or a mapping "
                                   f"arm -> P(arm), got {type(p).__name__}")
        need = (self.control, *self.treatment_arms_)
        missing = [a for a in need if a not in p]
        if missing:
            raise UpliftInputError(f"propensity: no probability for arms {missing}")
        bad = [a for a in need if not 0 < float(p[a]) < 1]
        if bad:
            raise UpliftInputError(f"propensity: P(arm) must be in (0, 1), not for arms {bad}")
        return {a: float(p[a]) for a in need}

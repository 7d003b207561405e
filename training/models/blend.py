"""Rank blend: the average of several models' percentile ranks, calibrated to a probability.

Two models that rank customers about equally well by different means (a booster on many
features, a logistic regression on three) often rank better together than either alone, but
their probabilities do not average into a calibrated one. The blend puts each model's score on
one scale (its percentile among the scores it was fitted on), averages the percentiles, and
maps the average to a probability with a logistic (Platt) map.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class RankBlend(ClassifierMixin, BaseEstimator):
    """P(second class) from the mean percentile rank of k model scores (higher = more likely).

    X is (rows, k): each column one model's score of the row. Fit on out-of-fold scores (each
    row scored by a model that did not learn from it) so the calibration learns how well the
    models rank customers they have not seen; later calls pass the models' scores of new rows
    on the same scale.

    A score's percentile is read off the column's fitted distribution at `n_knots` + 1
    quantiles, interpolated linearly in between (so the map is strictly increasing inside the
    fitted range and never ties customers a model tells apart there), clamped outside it.
    Hyper-parameters: `n_knots`, `calibration_C` (inverse L2 strength of the logistic map).
    Learned: `knots_` and `levels_` (per column: distinct score quantiles and their
    percentiles), `calibrator_` (logistic map of the logit of the mean percentile),
    `classes_`, `n_features_in_`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> risk = rng.random(400)
    >>> y = (risk + 0.3 * rng.normal(size=400) > 0.5).astype(int)
    >>> scores = np.column_stack([risk + 0.2 * rng.normal(size=400), np.sqrt(risk)])
    >>> blend = RankBlend().fit(scores, y)
    >>> blend.predict_proba([[0.0, 0.1], [1.0, 0.9]])[:, 1].round(2).tolist()
    [0.05, 0.85]
    """

    def __init__(self, *, n_knots: int = 1000, calibration_C: float = 1e6) -> None:
        self.n_knots = n_knots
        self.calibration_C = calibration_C

    def fit(self, X: npt.ArrayLike | pd.DataFrame, y: npt.ArrayLike) -> RankBlend:
        """Fit the percentile scales and the calibration on scores X and labels y."""
        if not (isinstance(self.n_knots, int | np.integer) and self.n_knots >= 1):
            raise ValueError(f"n_knots: must be a whole number >= 1, got {self.n_knots!r}")
        if not self.calibration_C > 0:
            raise ValueError(f"calibration_C: must be > 0, got {self.calibration_C!r}")
        x, y = validate_data(self, X, y, dtype="float64")
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(f"y: {len(self.classes_)} classes found "
                             f"({self.classes_.tolist()}), a rank blend needs two")
        grid = np.linspace(0.0, 1.0, self.n_knots + 1)
        self.knots_: list[np.ndarray] = []
        self.levels_: list[np.ndarray] = []
        for column in x.T:
            # equal quantiles (ties in the scores) share the mean of their percentiles
            knots, where = np.unique(np.quantile(column, grid), return_inverse=True)
            self.knots_.append(knots)
            self.levels_.append(np.bincount(where, grid) / np.bincount(where))
        self.calibrator_ = LogisticRegression(C=self.calibration_C, max_iter=1000)
        self.calibrator_.fit(self._mean_logit(x), codes)
        if self.calibrator_.coef_[0, 0] <= 0:  # the ranks carry no signal: the base rate
            self.calibrator_.coef_[:] = 0.0
            self.calibrator_.intercept_[:] = _logit(np.array([codes.mean()]))
        return self

    def percentiles(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """(rows, k): each score's percentile on its column's fitted scale, in [0, 1]."""
        check_is_fitted(self, "calibrator_")
        x = validate_data(self, X, reset=False, dtype="float64")
        return self._percentiles(x)

    def _percentiles(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([np.interp(x[:, j], knots, levels) if len(knots) > 1
                                else np.full(len(x), 0.5)
                                for j, (knots, levels)
                                in enumerate(zip(self.knots_, self.levels_, strict=True))])

    def _mean_logit(self, x: np.ndarray) -> np.ndarray:
        return _logit(self._percentiles(x).mean(axis=1))[:, None]

    def predict_proba(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """(rows, 2): calibrated P of each class of `classes_` per row."""
        check_is_fitted(self, "calibrator_")
        x = validate_data(self, X, reset=False, dtype="float64")
        return self.calibrator_.predict_proba(self._mean_logit(x))

    def predict(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """The more probable label of each row."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

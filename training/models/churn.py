"""Churn classifier: XGBoost with a monotone (Platt) calibration learned on out-of-fold scores."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xgboost as xgb
from sklearn.base import ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from training.models.boosted import BoostedModel

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class ChurnClassifier(ClassifierMixin, BoostedModel):
    """P(no purchase in the horizon). One booster serves scores and TreeSHAP reasons.

    A logistic map of the booster's log-odds, fitted on out-of-fold scores, calibrates it
    (Platt scaling). The map is strictly increasing, so calibration never ties customers the
    booster tells apart, as an isotonic step map would. Pass customer ids as `groups`: a
    customer seen at several cutoffs then stays in one fold, and every fold still spans all
    seasons.

    Hyper-parameters: those of `BoostedModel`, plus `n_calibration_folds` (folds of the
    out-of-fold scores) and `calibration_C` (inverse L2 strength of the logistic map; the
    large default leaves it practically unpenalised).
    Learned: `model_` (the booster, fitted on all rows), `calibrator_` (the logistic map),
    `classes_` (the two labels, sorted: the second is the churn label, e.g. 1),
    `n_features_in_`, `feature_names_in_` (DataFrame fits only).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3))
    >>> y = (X[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(int)
    >>> model = ChurnClassifier(n_estimators=30, learning_rate=0.3).fit(X, y)
    >>> model.classes_.tolist()
    [0, 1]
    >>> model.predict([[-2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]).tolist()
    [0, 1]
    >>> model.predict_proba(X).shape
    (300, 2)
    """

    objective = "binary:logistic"

    def __init__(self, *, n_calibration_folds: int = 3, calibration_C: float = 1e6,
                 n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8,
                 min_child_weight: float = 5.0, random_state: int = 0, n_jobs: int = 2) -> None:
        super().__init__(n_estimators=n_estimators, max_depth=max_depth,
                         learning_rate=learning_rate, subsample=subsample,
                         colsample_bytree=colsample_bytree, min_child_weight=min_child_weight,
                         random_state=random_state, n_jobs=n_jobs)
        self.n_calibration_folds = n_calibration_folds
        self.calibration_C = calibration_C

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: npt.ArrayLike | pd.DataFrame, y: npt.ArrayLike,
            groups: npt.ArrayLike | None = None) -> ChurnClassifier:
        """Fit on feature rows X and two-class labels y (e.g. 0 stays, 1 churns).

        `groups` (one value per row, e.g. the customer id) keeps each group's rows in one
        calibration fold; without it rows are dealt to the folds in turn.
        """
        folds = self.n_calibration_folds
        if not isinstance(folds, numbers.Integral) or folds < 2:
            raise ValueError(f"n_calibration_folds: must be a whole number >= 2, got {folds!r}")
        if not self.calibration_C > 0:
            raise ValueError(f"calibration_C: must be > 0, got {self.calibration_C!r}")
        matrix, y = self._fit_data(X, y, y_numeric=False)
        check_classification_targets(y)
        kind = type_of_target(y, input_name="y", raise_unknown=True)
        if kind != "binary":
            raise ValueError("Only binary classification is supported. The type of the target "
                             f"is {kind}.")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(f"y: 1 class found ({self.classes_.tolist()}), churn needs two "
                             "(stays, churns)")
        target = codes.astype("float64")
        if groups is None:
            groups = np.arange(len(target)) % folds
        groups = np.asarray(groups)
        if groups.shape != target.shape:
            raise ValueError(f"groups: expected {len(target)} values, got shape {groups.shape}")

        oof = np.full(len(target), np.nan)
        n_splits = min(folds, len(np.unique(groups)))
        if n_splits >= 2:
            for tr, te in GroupKFold(n_splits=n_splits).split(matrix, target, groups):
                if len(np.unique(target[tr])) < 2:
                    continue  # a one-class fold: calibrate on in-sample scores instead
                m = xgb.XGBClassifier(**self._xgb_params()).fit(matrix.iloc[tr], target[tr])
                oof[te] = m.predict_proba(matrix.iloc[te])[:, 1]
        self.model_ = xgb.XGBClassifier(**self._xgb_params()).fit(matrix, target)
        if np.isnan(oof).any():
            oof = self.model_.predict_proba(matrix)[:, 1]
        self.calibrator_ = LogisticRegression(C=self.calibration_C, max_iter=1000)
        self.calibrator_.fit(_logit(oof)[:, None], target)
        if self.calibrator_.coef_[0, 0] <= 0:  # out-of-fold scores carry no signal: keep the
            self.calibrator_.coef_[:] = 1.0    # booster's own probabilities (identity map)
            self.calibrator_.intercept_[:] = 0.0
        return self

    def predict_proba(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """(rows, 2): calibrated P(stays) and P(churns) per row, in the order of `classes_`."""
        matrix = self._matrix(X)
        raw = self._forest_outputs(matrix)
        if raw is None:
            raw = self.model_.predict_proba(matrix)[:, 1]
        return self.calibrator_.predict_proba(_logit(raw)[:, None])

    def predict(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """The more probable label of each row (churn when its probability is above 0.5)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "model_" in state and "classes_" not in state:  # saved before `classes_` existed,
            self.classes_ = np.array([0, 1])                # when labels had to be 0 and 1

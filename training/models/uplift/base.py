"""Shared base of the uplift learners: input checks at the boundary, arms, outcome kind, XGBoost.

Every learner is a scikit-learn style estimator: keyword-only hyper-parameters in `__init__`
(stored as given, checked at `fit`), `fit(X, treatment, y)` returns self, learned state ends in
`_`, and a prediction before `fit` raises NotFittedError.
Several treatments are handled at once: `treatment` holds one arm name per row, one of them the
control arm named by the `control` hyper-parameter; `predict_uplift(X)` gives one column per
other arm, the estimated effect of that arm against control. Inputs are checked once, here, and
a bad one raises a single `UpliftInputError` (a `ModelInputError`, which the CLI prints as one
line) naming the argument, so the learners can assume clean arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from xgboost import XGBClassifier, XGBRegressor

from training.models.errors import ModelInputError

CONTROL = "control"
OutcomeKind = Literal["auto", "binary", "continuous"]
OUTCOME_KINDS: tuple[str, ...] = ("auto", "binary", "continuous")


class UpliftInputError(ModelInputError):
    """Bad input to an uplift learner or metric: one line naming the argument and the problem."""


# ------------------------------------------------------------------------------ input checks


def check_features(X: Any, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """X as a float DataFrame (NaN allowed: XGBoost treats it as missing; inf is not).

    A DataFrame keeps its column names and index; a 2-D array gets columns `x0, x1, ...`.
    With `columns` (the names seen at fit) a DataFrame must hold each of them (extra columns
    are ignored, order is taken from `columns`) and an array must have that many columns.
    """
    if isinstance(X, pd.DataFrame):
        frame = X.rename(columns=str)
        dup = frame.columns[frame.columns.duplicated()]
        if len(dup):
            raise UpliftInputError(f"X: column {dup[0]!r} appears more than once")
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
            raise UpliftInputError(f"X: expected a DataFrame or 2-D array ({exc})") from None
        if arr.ndim != 2:
            raise UpliftInputError(f"X: expected a DataFrame or 2-D array, got shape {arr.shape}")
        names = list(columns) if columns is not None else [f"x{j}" for j in range(arr.shape[1])]
        if len(names) != arr.shape[1]:
            raise UpliftInputError(
                f"X: {arr.shape[1]} columns, the learner was fitted on {len(names)}")
        frame = pd.DataFrame(arr, columns=names)
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UpliftInputError(f"X: missing feature columns {missing[:5]}"
                                   + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        frame = frame[list(columns)]
    if frame.shape[0] == 0:
        raise UpliftInputError("X: no rows")
    if frame.shape[1] == 0:
        raise UpliftInputError("X: no feature columns")
    bad = [c for c in frame.columns
           if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]
    if bad:
        raise UpliftInputError(
            f"X: columns {bad[:5]} are not numeric (encode categories as numbers first)")
    out = pd.DataFrame(
        {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in frame.columns},
        index=frame.index)
    inf = np.isinf(out.to_numpy())
    if inf.any():
        col = out.columns[int(np.argmax(inf.any(axis=0)))]
        raise UpliftInputError(f"X: {int(inf.sum())} infinite values (first in column {col!r})")
    return out


def check_treatment(treatment: Any, n: int, control: str) -> np.ndarray:
    """Arm names as a string array of length n that holds `control` and at least one other arm."""
    if isinstance(treatment, pd.DataFrame):
        raise UpliftInputError("treatment: expected one arm name per row, got a DataFrame")
    if np.ndim(treatment) != 1:
        raise UpliftInputError(f"treatment: expected a 1-D array, got shape {np.shape(treatment)}")
    values = pd.Series(treatment.to_numpy() if isinstance(treatment, pd.Series)
                       else np.asarray(treatment, dtype=object))
    if len(values) != n:
        raise UpliftInputError(f"treatment: length {len(values)} does not match X's {n} rows")
    if values.isna().any():
        i = int(np.argmax(values.isna().to_numpy()))
        raise UpliftInputError(
            f"treatment: {int(values.isna().sum())} missing arm names (first at row {i})")
    arms = values.astype(str).to_numpy(dtype=object)
    present = sorted(set(arms))
    if not isinstance(control, str) or control not in present:
        raise UpliftInputError(f"treatment: control arm {control!r} not found among the arms "
                               f"{present[:10]}; set control= to one of them")
    if len(present) < 2:
        raise UpliftInputError(f"treatment: only one arm ({present[0]!r}); need the control arm "
                               "and at least one treatment arm")
    return arms


def check_outcome(y: Any, n: int, kind: str) -> tuple[np.ndarray, str]:
    """Finite float outcomes of length n and the resolved kind ("binary" or "continuous").

    kind "auto" means binary when every value is 0 or 1, continuous otherwise.
    """
    if kind not in OUTCOME_KINDS:
        raise UpliftInputError(f"outcome: {kind!r} is not one of {list(OUTCOME_KINDS)}")
    if isinstance(y, pd.DataFrame):
        raise UpliftInputError("y: expected one outcome per row, got a DataFrame")
    try:
        arr = (y.to_numpy(dtype=np.float64, na_value=np.nan) if isinstance(y, pd.Series)
               else np.asarray(y, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise UpliftInputError(f"y: expected numbers ({exc})") from None
    if arr.ndim != 1:
        raise UpliftInputError(f"y: expected a 1-D array, got shape {arr.shape}")
    if len(arr) != n:
        raise UpliftInputError(f"y: length {len(arr)} does not match X's {n} rows")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise UpliftInputError(f"y: {int(bad.sum())} values are NaN or infinite "
                               f"(first at row {int(np.argmax(bad))})")
    is_binary = bool(np.isin(arr, (0.0, 1.0)).all())
    if kind == "binary" and not is_binary:
        i = int(np.argmax(~np.isin(arr, (0.0, 1.0))))
        raise UpliftInputError(f"y: outcome='binary' needs 0/1 values, got {arr[i]:g} at row {i}")
    resolved = kind if kind != "auto" else ("binary" if is_binary else "continuous")
    return arr, resolved


# ------------------------------------------------------------------------------ base class


class _Constant:
    """Stands in for a model when the training outcome is constant (e.g. no visit in an arm):
    XGBoost's classifier refuses a single class, and the best prediction is the constant."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), self.value)


class UpliftLearner(BaseEstimator):
    """Base of the uplift learners: shared hyper-parameters, checks, arms and the XGBoost factory.

    Hyper-parameters: `control` (name of the control arm), `outcome` ("auto", "binary" for a
    classifier of P(y=1), "continuous" for a squared-error regressor, e.g. spend) and the
    XGBoost parameters every component model shares (`tree_method="hist"`, CPU).
    Learned: `treatment_arms_` (sorted names of the non-control arms), `outcome_kind_`,
    `arm_counts_` (training rows per arm), `feature_names_in_`, `n_features_in_`.
    """

    def __init__(
        self,
        *,
        control: str = CONTROL,
        outcome: OutcomeKind = "auto",
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
        self.control = control
        self.outcome = outcome
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_child_weight = min_child_weight
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- the public contract

    def fit(self, X: Any, treatment: npt.ArrayLike, y: npt.ArrayLike) -> Self:
        """Learn the effect of each treatment arm against control from a randomised log."""
        frame = check_features(X)
        arms = check_treatment(treatment, len(frame), self.control)
        outcome, kind = check_outcome(y, len(frame), self.outcome)
        names, counts = np.unique(arms, return_counts=True)
        self.treatment_arms_ = tuple(str(a) for a in names if a != self.control)
        self.outcome_kind_ = kind
        self.arm_counts_ = {str(a): int(c) for a, c in zip(names, counts, strict=True)}
        self.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        self.n_features_in_ = frame.shape[1]
        self._fit(frame, arms, outcome)
        return self

    def predict_uplift(self, X: Any) -> pd.DataFrame:
        """Estimated effect of each treatment arm vs control: one column per arm, X's index."""
        check_is_fitted(self, "treatment_arms_")
        frame = check_features(X, list(self.feature_names_in_))
        values = np.asarray(self._predict_uplift(frame), dtype=np.float64)
        return pd.DataFrame(values, index=frame.index, columns=list(self.treatment_arms_))

    def best_arm(self, X: Any) -> pd.DataFrame:
        """Per row the arm with the largest estimated uplift (`arm`) and that uplift (`uplift`).

        Negative best uplifts are kept: whether to contact at all is the policy's decision."""
        u = self.predict_uplift(X)
        best = u.to_numpy().argmax(axis=1)
        return pd.DataFrame({"arm": np.asarray(u.columns, dtype=object)[best],
                             "uplift": u.to_numpy()[np.arange(len(u)), best]}, index=u.index)

    # -- what each learner implements

    def _fit(self, X: pd.DataFrame, arms: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_uplift(self, X: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    # -- helpers for the learners

    def _xgb_params(self) -> dict[str, Any]:
        return {"n_estimators": self.n_estimators, "max_depth": self.max_depth,
                "learning_rate": self.learning_rate, "min_child_weight": self.min_child_weight,
                "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
                "reg_lambda": self.reg_lambda, "n_jobs": self.n_jobs,
                "random_state": self.random_state, "tree_method": "hist", "verbosity": 0}

    def _fit_model(self, X: pd.DataFrame, y: np.ndarray, kind: str,
                   weight: np.ndarray | None = None) -> Any:
        """A fitted XGBoost classifier (kind "binary": P(y=1)) or regressor (else)."""
        if np.all(y == y[0]):
            return _Constant(y[0])
        if kind == "binary":
            model = XGBClassifier(objective="binary:logistic", eval_metric="logloss",
                                  **self._xgb_params())
        else:
            model = XGBRegressor(objective="reg:squarederror", **self._xgb_params())
        return model.fit(X, y, sample_weight=weight)

    @staticmethod
    def _predict_model(model: Any, X: pd.DataFrame) -> np.ndarray:
        if isinstance(model, XGBClassifier):
            return model.predict_proba(X)[:, 1]
        return np.asarray(model.predict(X), dtype=np.float64)

    def _pair(self, arms: np.ndarray, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of `arm` or control (mask) and, among them, which are `arm` (1) or control (0)."""
        rows = (arms == arm) | (arms == self.control)
        return rows, (arms[rows] == arm).astype(np.float64)

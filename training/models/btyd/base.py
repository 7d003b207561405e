"""Shared machinery of the BTYD models: input checks, customer grouping and the MLE fit.

Every model is a scikit-learn style estimator: keyword-only hyper-parameters in `__init__`,
`fit` returns self, learned state ends in `_`, and a prediction before `fit` raises
NotFittedError. Inputs are checked once, here at the boundary, with errors that name the bad
argument, so the likelihood code can assume clean float arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

ArrayLike = np.ndarray | pd.Series | Sequence[float] | float
Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]

# Log-parameter box of the optimiser: wide enough for any sensible fit, narrow enough that
# exp() never overflows inside the likelihood.
_LOG_BOUND = 25.0


# ------------------------------------------------------------------------------ input checks


def as_vector(value: Any, name: str) -> np.ndarray:
    """`value` (array, Series, list or scalar) as a 1-D float64 array, all finite."""
    try:
        if isinstance(value, pd.Series | pd.Index):
            arr = value.to_numpy(dtype=np.float64, na_value=np.nan)
        elif isinstance(value, pd.DataFrame):
            raise ValueError(f"{name}: expected a 1-D array or Series, got a DataFrame")
        else:
            arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(f"{name}:"):
            raise
        raise ValueError(f"{name}: expected numbers, got {type(value).__name__} ({exc})") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name}: {int(bad.sum())} values are NaN or infinite (first at position {i}: "
            f"{arr[i]})"
        )
    return arr


def _first_bad(name: str, mask: np.ndarray, arr: np.ndarray, what: str) -> None:
    if mask.any():
        i = int(np.argmax(mask))
        raise ValueError(
            f"{name}: {int(mask.sum())} values {what} (first at position {i}: {arr[i]:g})"
        )


def check_nonnegative(arr: np.ndarray, name: str) -> None:
    _first_bad(name, arr < 0, arr, "are negative")


def check_integer(arr: np.ndarray, name: str) -> None:
    _first_bad(name, arr != np.floor(arr), arr, "are not whole numbers")


def check_lengths(first: tuple[str, np.ndarray], *others: tuple[str, np.ndarray]) -> int:
    """Common length of the named arrays; ValueError naming the first mismatch or empty input."""
    name0, arr0 = first
    n = len(arr0)
    for name, arr in others:
        if len(arr) != n:
            raise ValueError(f"{name}: length {len(arr)} does not match {name0}'s length {n}")
    if n == 0:
        raise ValueError(f"{name0}: empty input, need at least one customer")
    return n


def check_rfm(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated (x, t_x, T): whole x >= 0, 0 <= t_x <= T, t_x = 0 when x = 0, equal lengths."""
    x = as_vector(frequency, "frequency")
    tx = as_vector(recency, "recency")
    big_t = as_vector(T, "T")
    check_lengths(("frequency", x), ("recency", tx), ("T", big_t))
    check_nonnegative(x, "frequency")
    check_integer(x, "frequency")
    check_nonnegative(tx, "recency")
    check_nonnegative(big_t, "T")
    over = tx > big_t
    if over.any():
        i = int(np.argmax(over))
        raise ValueError(
            f"recency: {int(over.sum())} values exceed T (first at position {i}: "
            f"recency={tx[i]:g} > T={big_t[i]:g})"
        )
    _first_bad("recency", (x == 0) & (tx != 0), tx, "are non-zero where frequency is 0")
    return x, tx, big_t


def check_weights(weights: ArrayLike | None, n: int) -> np.ndarray | None:
    """Validated non-negative customer counts per row (None = one customer per row)."""
    if weights is None:
        return None
    w = as_vector(weights, "weights")
    if len(w) != n:
        raise ValueError(f"weights: length {len(w)} does not match frequency's length {n}")
    check_nonnegative(w, "weights")
    if not w.sum() > 0:
        raise ValueError("weights: all zero, need at least one customer")
    return w


def check_durations(value: ArrayLike, name: str) -> np.ndarray:
    """A validated, non-empty vector of non-negative durations named `name`."""
    arr = as_vector(value, name)
    if len(arr) == 0:
        raise ValueError(f"{name}: empty input, need at least one customer")
    check_nonnegative(arr, name)
    return arr


def check_horizon(t: ArrayLike, n: int | None = None) -> np.ndarray:
    """Validated forecast horizon(s): a scalar, or one value per customer."""
    arr = as_vector(t, "t")
    check_nonnegative(arr, "t")
    if n is not None and len(arr) not in (1, n):
        raise ValueError(f"t: length {len(arr)} must be 1 or the number of customers ({n})")
    return arr


# ---------------------------------------------------------------------------------- grouping


def factorize(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct sorted values, code of each row): offsets for whole numbers of small range
    (one pass, no sort: time columns in days), `np.unique` otherwise."""
    if len(col) == 0:
        return col[:0], np.zeros(0, dtype=np.int64)
    lo, hi = float(col.min()), float(col.max())
    if hi - lo <= 4 * len(col) + 1024 and np.array_equal(col, np.floor(col)):
        offset = (col - lo).astype(np.int64)
        present = np.bincount(offset, minlength=int(hi - lo) + 1) > 0
        remap = np.cumsum(present) - 1
        return lo + np.flatnonzero(present).astype(np.float64), remap[offset]
    uniq, inv = np.unique(col, return_inverse=True)
    return uniq, inv.astype(np.int64)


def group_rows(
    columns: Sequence[np.ndarray], weights: np.ndarray | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct rows of `columns` and the number (total weight) of customers in each.

    Customers with identical (frequency, recency, T) contribute identical likelihood terms, so a
    fit needs one term per distinct row, weighted by its count. Each column becomes dense
    integer codes, their mixed-radix combination one int64 key per row, and one `np.unique` of
    the keys (with counts, or with the inverse when rows carry weights) gives the groups, whose
    values are decoded back from the distinct keys.
    """
    coded = [factorize(col) for col in columns]
    if math.prod(len(values) for values, _ in coded) >= 2**62:  # key would overflow
        stacked = np.column_stack(columns)
        rows, inverse = np.unique(stacked, axis=0, return_inverse=True)
        w = np.bincount(inverse.ravel(), weights=weights, minlength=len(rows))
        keep = w > 0
        return [rows[keep, j] for j in range(len(columns))], w[keep]
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for values, codes in coded:
        key = key * len(values) + codes
    if weights is None:
        keys, counts = np.unique(key, return_counts=True)
        w = counts.astype(np.float64)
    else:
        keys, inverse = np.unique(key, return_inverse=True)
        w = np.bincount(inverse, weights=weights, minlength=len(keys))
    out = []
    for values, _ in reversed(coded):
        keys, code = np.divmod(keys, len(values))
        out.append(values[code])
    keep = w > 0
    return [col[keep] for col in reversed(out)], w[keep]


def distinct_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """(each column's values at the distinct rows, the distinct row of each input row): what
    `np.unique(np.column_stack(columns), axis=0, return_inverse=True)` gives for finite
    values, in the same order, from one-column codes (`factorize`) instead of row compares.

    Examples
    --------
    >>> values, inverse = distinct_rows(np.array([2.0, 1.0, 2.0]), np.array([5.0, 7.0, 5.0]))
    >>> [v.tolist() for v in values], inverse.tolist()
    ([[1.0, 2.0], [7.0, 5.0]], [1, 0, 1])
    """
    arrays = [np.asarray(c, dtype=np.float64).ravel() for c in columns]
    key = np.zeros(len(arrays[0]) if arrays else 0, dtype=np.int64)
    for column in arrays:
        values, codes = factorize(column)
        # renumbered after each column, so the mixed-radix key stays below rows x values
        key = np.unique(key * len(values) + codes, return_inverse=True)[1].ravel()
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return [a[first] for a in arrays], inverse.ravel()


# -------------------------------------------------------------------------------- numerics


def wsum(w: np.ndarray, v: np.ndarray) -> float:
    """sum(w * v) without BLAS: on small machines a multi-threaded BLAS dot on long vectors is
    slower than one pass."""
    return float(np.einsum("i,i->", w, v))


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _single_threaded_blas() -> AbstractContextManager[object]:
    """BLAS limited to one thread while L-BFGS-B runs: its linear algebra is on 4-vectors,
    where waking OpenBLAS threads costs more than the work."""
    return _blas_controller().limit(limits=1, user_api="blas")


# ------------------------------------------------------------------------------------ models


class BaseModel(BaseEstimator):
    """Maximum-likelihood fit on log-parameters with L-BFGS-B, and the fitted-state contract.

    Subclasses set `_param_names`, build a vectorised objective (mean negative log-likelihood
    per customer and its gradient in the natural parameters) and call `_fit_mle`.

    Hyper-parameters
    ----------------
    penalizer: L2 penalty `penalizer * sum(params**2)` added to the mean negative
        log-likelihood (lifetimes' `penalizer_coef` convention); 0 = plain maximum likelihood.
    tol: L-BFGS-B gradient tolerance on the mean negative log-likelihood (log-parameters).
    max_iter: L-BFGS-B iteration limit.
    initial_params: starting values by name (None = a data-driven start).
    group: fit one likelihood term per distinct input row, weighted by its count (True), or one
        per customer (False; same result, only slower, kept to check the grouping).
    max_param: upper bound of every parameter. Where the likelihood has a ridge to infinity
        (Pareto/NBD on data with homogeneous dropout: s, beta -> inf at fixed s/beta) a bound
        stops the fit at a point whose forecasts equal the limit's, in a few iterations.
    """

    _param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        penalizer: float = 0.0,
        tol: float = 1e-10,
        max_iter: int = 1000,
        initial_params: dict[str, float] | None = None,
        group: bool = True,
        max_param: float = float(np.exp(25.0)),
    ) -> None:
        self.penalizer = penalizer
        self.tol = tol
        self.max_iter = max_iter
        self.initial_params = initial_params
        self.group = group
        self.max_param = max_param

    # -- fitting -------------------------------------------------------------------------

    def _check_hyper(self) -> None:
        if not np.isfinite(self.penalizer) or self.penalizer < 0:
            raise ValueError(f"penalizer: must be a finite number >= 0, got {self.penalizer}")
        if not self.tol > 0:
            raise ValueError(f"tol: must be > 0, got {self.tol}")
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter: must be >= 1, got {self.max_iter}")

    def _rfm_rows(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike,
                  weights: ArrayLike | None) -> tuple[np.ndarray, ...]:
        """Checked (x, t_x, T, weights) rows to fit: grouped by identical rows unless `group`
        is off (then one row per customer with weight 1)."""
        self._check_hyper()
        x, tx, big_t = check_rfm(frequency, recency, T)
        w = check_weights(weights, len(x))
        if self.group:
            (x, tx, big_t), w = group_rows([x, tx, big_t], w)
        elif w is None:
            w = np.ones_like(x)
        return x, tx, big_t, w

    def _start(self, default: dict[str, float]) -> np.ndarray:
        """Log of the starting parameters: `initial_params` where given, else `default`."""
        start = dict(default)
        given = self.initial_params or {}
        unknown = set(given) - set(self._param_names)
        if unknown:
            raise ValueError(
                f"initial_params: unknown names {sorted(unknown)}, expected {self._param_names}"
            )
        start.update(given)
        values = np.array([start[k] for k in self._param_names], dtype=np.float64)
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise ValueError(f"initial_params: all parameters must be finite and > 0, got {start}")
        return np.log(values)

    def _fit_mle(self, objective: Objective, start: np.ndarray, n_customers: float,
                 n_groups: int) -> None:
        """Minimise the penalised mean negative log-likelihood; set the fitted attributes."""
        penalizer = float(self.penalizer)

        def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
            theta = np.exp(z)
            f, grad = objective(theta)
            if penalizer:
                f = f + penalizer * float(theta @ theta)
                grad = grad + 2.0 * penalizer * theta
            if not np.isfinite(f):
                return np.inf, np.zeros_like(z)
            return f, grad * theta

        with _single_threaded_blas():
            res = minimize(
                fun,
                start,
                jac=True,
                method="L-BFGS-B",
                bounds=[(-_LOG_BOUND, min(_LOG_BOUND, float(np.log(self.max_param))))]
                * len(start),
                options={"maxiter": int(self.max_iter), "gtol": float(self.tol),
                         "ftol": 1e3 * np.finfo(float).eps, "maxcor": 20},
            )
        theta = np.exp(res.x)
        f, grad = objective(theta)
        at_bound = bool(np.any(np.abs(res.x) >= _LOG_BOUND - 1e-9))
        grad_norm = float(np.max(np.abs(grad * theta)))
        self.params_ = {k: float(v) for k, v in zip(self._param_names, theta, strict=True)}
        self.n_customers_ = int(n_customers) if float(n_customers).is_integer() else n_customers
        self.n_groups_ = int(n_groups)
        self.log_likelihood_ = float(-f * n_customers)
        # L-BFGS-B may stop on "no further decrease" at machine precision; accept that when
        # the gradient is small as well.
        self.converged_ = bool(
            np.isfinite(f) and not at_bound and (res.success or grad_norm < 1e-5)
        )
        self.n_iter_ = int(res.nit)
        self.optimizer_message_ = str(res.message)

    # -- fitted state --------------------------------------------------------------------

    def _check_fitted(self) -> None:
        check_is_fitted(self, "params_", msg=f"{type(self).__name__} is not fitted yet: call "
                        "fit() first (or build it with from_params())")

    def _theta(self) -> tuple[float, ...]:
        self._check_fitted()
        return tuple(self.params_[k] for k in self._param_names)

    @classmethod
    def from_params(cls, params: dict[str, float], **hyper: Any) -> Self:
        """A model that predicts with the given parameters (e.g. published ones), unfitted.

        Only `params_` is set; the fit diagnostics (`log_likelihood_`, ...) stay absent.
        """
        missing = set(cls._param_names) - set(params)
        if missing:
            raise ValueError(f"params: missing {sorted(missing)}")
        values = {k: float(params[k]) for k in cls._param_names}
        if not all(np.isfinite(v) and v > 0 for v in values.values()):
            raise ValueError(f"params: all parameters must be finite and > 0, got {values}")
        model = cls(**hyper)
        model.params_ = values
        return model

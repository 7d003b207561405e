"""Shared base of the XGBoost models: hyper-parameters, input checks at the boundary, and for
large batches XGBoost's own predictions and exact TreeSHAP contributions by compiled loops."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

_BLOCK = 4096  # rows per pass of the table sums through the trees (a tree's tables in cache)
# Below this many rows XGBoost's own TreeSHAP and predictions are faster than the compiled
# tables and forest.
TABLE_ROWS = 256
_LOCK = threading.Lock()
_CACHED = ("_shap_tables", "_forest")  # built from the booster when first needed; not pickled
_LOCK_SUFFIX = "_lock"


class BoostedModel(BaseEstimator):
    """XGBoost on a fixed set of feature columns; subclasses choose the objective.

    X is a DataFrame or a 2-D array of numbers; NaN marks a missing value (XGBoost sends it
    down each split's learned default side), infinities are refused. A DataFrame with string
    column names sets `feature_names_in_`, and later calls must pass the same columns in the
    same order (select them with `X[model.feature_names_in_]`); an array fit names its
    columns x0, x1, ... in `contributions`.

    Hyper-parameters are XGBoost's (`tree_method="hist"`, CPU). Learned: `model_` (the fitted
    XGBoost estimator), `n_features_in_`, `feature_names_in_` (DataFrame fits only).
    """

    objective: ClassVar[str] = "reg:squarederror"

    def __init__(self, *, n_estimators: int = 300, max_depth: int = 4,
                 learning_rate: float = 0.05, subsample: float = 0.8,
                 colsample_bytree: float = 0.8, min_child_weight: float = 5.0,
                 random_state: int = 0, n_jobs: int = 2) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def _xgb_params(self) -> dict[str, object]:
        """Keyword arguments of the XGBoost estimator (subclasses add their own)."""
        return dict(n_estimators=self.n_estimators, max_depth=self.max_depth,
                    learning_rate=self.learning_rate, subsample=self.subsample,
                    colsample_bytree=self.colsample_bytree,
                    min_child_weight=self.min_child_weight, random_state=self.random_state,
                    n_jobs=self.n_jobs, objective=self.objective, tree_method="hist")

    # -- input checks ----------------------------------------------------------------------

    def _fit_data(self, X: npt.ArrayLike | pd.DataFrame, y: npt.ArrayLike, *,
                  y_numeric: bool) -> tuple[pd.DataFrame, np.ndarray]:
        """Checked (X as the float frame XGBoost learns from, y); records the feature names."""
        x, y = validate_data(self, X, y, dtype="float64", ensure_all_finite="allow-nan",
                             y_numeric=y_numeric)
        return self._frame(x), y

    def _matrix(self, X: npt.ArrayLike | pd.DataFrame) -> pd.DataFrame:
        """X checked against the fit (same number of columns; same names, in order, for a
        DataFrame fit) as the float frame XGBoost reads."""
        check_is_fitted(self, "model_")
        names = getattr(self, "feature_names_in_", None)
        if (isinstance(X, pd.DataFrame) and names is not None and len(X) > 0
                and X.columns.tolist() == names.tolist()
                and all(isinstance(t, np.dtype) and t.kind in "biuf" for t in X.dtypes)):
            # The serving case: the fit's columns, in order, plain numeric dtypes. Accepting it
            # here when it holds no infinity is what `validate_data` would decide, without its
            # per-column passes, which dominate the cost of scoring one row.
            x = X.to_numpy(dtype="float64")
            if not np.isinf(x).any():
                return self._frame(x)
        x = validate_data(self, X, reset=False, dtype="float64", ensure_all_finite="allow-nan")
        return self._frame(x)

    def _frame(self, x: np.ndarray) -> pd.DataFrame:
        names = getattr(self, "feature_names_in_", None)
        columns = (list(names) if names is not None
                   else [f"x{j}" for j in range(self.n_features_in_)])
        return pd.DataFrame(x, columns=columns, copy=False)

    # -- explanations ----------------------------------------------------------------------

    def contributions(self, X: npt.ArrayLike | pd.DataFrame) -> pd.DataFrame:
        """XGBoost's TreeSHAP contributions per feature (margin units), plus `bias`.

        Small inputs go to XGBoost on one thread; larger ones read the same numbers from
        per-tree tables (`ShapTables`, built once per booster and not pickled). The index is
        X's for a DataFrame.
        """
        index = X.index if isinstance(X, pd.DataFrame) else None
        matrix = self._matrix(X)
        booster = self.model_.get_booster()
        names = list(matrix.columns)
        tables = self._tables() if len(matrix) >= TABLE_ROWS else None
        if tables is not None:
            contrib = tables.contributions(matrix.to_numpy(dtype="float32"))
        else:
            with xgb.config_context(nthread=1):
                dm = xgb.DMatrix(matrix.to_numpy(dtype="float32"), nthread=1,
                                 feature_names=names)
                contrib = booster.predict(dm, pred_contribs=True)
        return pd.DataFrame(contrib, columns=[*names, "bias"], index=index)

    def _forest_outputs(self, matrix: pd.DataFrame) -> np.ndarray | None:
        """XGBoost's predictions (float32, the objective's output) of a big batch, read by the
        compiled forest (`CompiledForest`) once `prepare_predictions` has built it; None
        otherwise (the caller asks XGBoost): a model predicted a few times, as in training,
        would spend more on building it than it saves."""
        cached = self.__dict__.get("_forest")
        if (len(matrix) < TABLE_ROWS or cached is None or cached[1] is None
                or cached[0] is not self.model_.get_booster()):
            return None
        return cached[1].predict(matrix.to_numpy(dtype="float32"))

    def prepare_predictions(self) -> None:
        """Build the compiled forest big batches' predictions read from now on (batch
        scoring, where the same model predicts many chunks)."""
        self._cached("_forest", CompiledForest.build)

    def _tables(self) -> ShapTables | None:
        return self._cached("_shap_tables", ShapTables.build)

    def _cached(self, name: str, build: Callable[[xgb.Booster], Any]) -> Any:
        """What `build` makes of the booster, made once per booster (by one thread) and kept
        under `name` (not pickled)."""
        booster = self.model_.get_booster()
        cached = self.__dict__.get(name)
        if cached is None or cached[0] is not booster:
            with _LOCK:  # one lock per kept thing: building one does not hold up the other
                lock = self.__dict__.setdefault(name + _LOCK_SUFFIX, threading.Lock())
            with lock:
                cached = self.__dict__.get(name)
                if cached is None or cached[0] is not booster:
                    cached = (booster, build(booster))
                    self.__dict__[name] = cached
        return cached[1]

    def prepare_contributions(self) -> None:
        """Build now the tables big batches' `contributions` read, so that threads scoring
        them do not wait on it."""
        self._tables()

    # -- pickling --------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: the live model keeps its tables
        for name in _CACHED:
            state.pop(name, None)
            state.pop(name + _LOCK_SUFFIX, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled model; one saved before a hyper-parameter existed gets that
        parameter's default, which is what it was fitted with."""
        defaults = {name: p.default
                    for name, p in inspect.signature(type(self).__init__).parameters.items()
                    if p.kind is p.KEYWORD_ONLY}
        state = {**defaults, **state}
        if "feature_names_in_" in state and "n_features_in_" not in state:
            state["n_features_in_"] = len(state["feature_names_in_"])
        super().__setstate__(state)


class TweedieRegressor(RegressorMixin, BoostedModel):
    """A BoostedModel forecasting a non-negative total on XGBoost's Tweedie loss (many zeros,
    a long right tail); subclasses set `tweedie_variance_power` in their `__init__`."""

    objective = "reg:tweedie"
    tweedie_variance_power: float

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True  # a forecast of a non-negative total
        return tags

    def _xgb_params(self) -> dict[str, object]:
        return {**super()._xgb_params(), "tweedie_variance_power": self.tweedie_variance_power}

    def _forecast(self, X: npt.ArrayLike | pd.DataFrame) -> np.ndarray:
        """The booster's forecast per row (float64): the compiled forest's for a prepared big
        batch, else XGBoost's (the same numbers)."""
        matrix = self._matrix(X)
        out = self._forest_outputs(matrix)
        return (self.model_.predict(matrix) if out is None else out).astype("float64")


class ShapTables:
    """Exact path-dependent TreeSHAP of a tree ensemble, read from per-tree tables.

    A tree's SHAP values depend on a row only through which side of each of the tree's splits
    it falls (or its missing value's default side). For one tree, each feature's thresholds cut
    its float32 axis into bins (plus a bin for missing); XGBoost computes the contributions of
    one representative row per combination of bins (on that tree alone), and a row's
    contributions are the sum over trees of its combination's entries, added in tree order in
    float32 as XGBoost does, so the results are the same numbers. Numeric splits of a
    single-output gbtree only; `build` returns None for anything else.
    """

    def __init__(self, n_features: int, bias: np.float32, edges: dict[int, np.ndarray],
                 trees: list[list[tuple[int, np.ndarray, np.ndarray]]]) -> None:
        self.n_features, self.bias = n_features, bias
        self.edges = edges  # feature -> every threshold on it in the ensemble (float32, sorted)
        # `trees`: per tree, per feature it splits on, (feature, cell step per global bin, its
        # column); kept flattened, as `kernels.tree_table_sums` reads them
        entries = [e for tree in trees for e in tree]
        self._tree_start = np.concatenate([[0], np.cumsum([len(t) for t in trees])]).astype(
            np.int64)
        self._feature = np.array([f for f, _, _ in entries], dtype=np.int64)
        self._step_at = np.concatenate([[0], np.cumsum([len(s) for _, s, _ in entries])[:-1]]
                                       ).astype(np.int64)
        self._steps = np.concatenate([s for _, s, _ in entries] or [[]]).astype(np.int64)
        self._column_at = np.concatenate([[0], np.cumsum([len(c) for _, _, c in entries])[:-1]]
                                         ).astype(np.int64)
        self._columns = np.concatenate([c for _, _, c in entries] or [[]]).astype(np.float32)

    @classmethod
    def build(cls, booster: xgb.Booster) -> ShapTables | None:
        model = json.loads(booster.save_raw("json"))["learner"]
        gbm = model["gradient_booster"]
        param = model["learner_model_param"]
        if (gbm.get("name") != "gbtree" or int(param.get("num_target", "1")) != 1
                or int(param.get("num_class", "0")) > 1):
            return None
        raw = gbm["model"]["trees"]
        if len(raw) != booster.num_boosted_rounds():
            return None
        n_features = int(param["num_feature"])
        parsed = []
        for tree in raw:
            inner = np.asarray(tree["left_children"]) != -1
            if np.any(np.asarray(tree["split_type"])[inner] != 0):
                return None
            feats = np.asarray(tree["split_indices"])[inner]
            thr = np.asarray(tree["split_conditions"], dtype=np.float64)[inner].astype(np.float32)
            parsed.append({int(f): np.unique(thr[feats == f]) for f in np.unique(feats)})
        edges = {f: np.unique(np.concatenate([p[f] for p in parsed if f in p]))
                 for f in sorted({f for p in parsed for f in p})}
        trees = []
        with xgb.config_context(nthread=1):
            for t, local in enumerate(parsed):
                feats = sorted(local)
                if not feats:
                    continue
                # one representative per bin: below the first threshold, each threshold, NaN
                reps = [np.concatenate([[np.nextafter(local[f][0], np.float32(-np.inf))],
                                        local[f], [np.nan]]).astype(np.float32) for f in feats]
                grid = np.meshgrid(*reps, indexing="ij")
                rows = np.full((grid[0].size, n_features), np.nan, dtype=np.float32)
                for f, g in zip(feats, grid, strict=True):
                    rows[:, f] = g.ravel()
                phi = booster[t:t + 1].predict(xgb.DMatrix(rows, nthread=1),
                                               pred_contribs=True, validate_features=False)
                stride = np.cumprod([1] + [len(r) for r in reps[:0:-1]])[::-1]
                entry = []
                for f, step in zip(feats, stride, strict=True):
                    # global bin (thresholds <= x; missing last) -> this tree's bin, times step
                    local_bins = np.concatenate([[0], np.searchsorted(local[f], edges[f],
                                                                      side="right"),
                                                 [len(local[f]) + 1]])
                    entry.append((f, (local_bins * step).astype(np.intp),
                                  np.ascontiguousarray(phi[:, f], dtype=np.float32)))
                trees.append(entry)
            one = np.zeros((1, n_features), dtype=np.float32)
            bias = booster.predict(xgb.DMatrix(one, nthread=1), pred_contribs=True,
                                   validate_features=False)[0, -1]
        return cls(n_features, np.float32(bias), edges, trees)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(rows, features + 1) float32: per-feature contributions, then the bias."""
        x = np.asarray(x, dtype=np.float32)
        out = np.zeros((self.n_features + 1, len(x)), dtype=np.float32)
        out[-1] = self.bias
        bins = np.zeros((self.n_features, len(x)), dtype=np.int64)
        for f, edges in self.edges.items():
            column = np.ascontiguousarray(x[:, f])
            b = np.searchsorted(edges, column, side="right")
            b[np.isnan(column)] = len(edges) + 1
            bins[f] = b
        from training.models import kernels  # numba: loaded where tables are read

        kernels.tree_table_sums(bins, self._tree_start, self._feature, self._step_at,
                                self._steps, self._column_at, self._columns, out, _BLOCK)
        return out.T


class CompiledForest:
    """XGBoost's predictions of a tree ensemble, computed by a compiled loop over complete
    trees (`kernels.forest_outputs`): base margin plus each tree's leaf in tree order, summed
    in float32, then the objective's transform in float32, as XGBoost does, so the numbers are
    XGBoost's (`build` checks them on probe rows). Numeric splits of a single-output gbtree up
    to MAX_DEPTH deep, and the objectives whose transform it knows; `build` returns None for
    anything else."""

    MAX_DEPTH = 6  # a node's test is one bit of a 64-bit word
    PROBE_ROWS = 512

    def __init__(self, *, objective: str, base_margin: np.float32, depth: int,
                 feature: np.ndarray, threshold: np.ndarray, right_missing: np.ndarray,
                 leaves: np.ndarray) -> None:
        self.objective, self.base_margin, self.depth = objective, base_margin, depth
        self.feature, self.threshold = feature, threshold
        self.right_missing, self.leaves = right_missing, leaves

    @classmethod
    def build(cls, booster: xgb.Booster) -> CompiledForest | None:
        from training.models import kernels  # numba: loaded where big batches are predicted

        model = json.loads(booster.save_raw("json"))["learner"]
        gbm, param = model["gradient_booster"], model["learner_model_param"]
        objective = model["objective"]["name"]
        trees = gbm["model"]["trees"] if gbm.get("name") == "gbtree" else []
        if (objective not in kernels.TRANSFORMS or not trees
                or int(param.get("num_target", "1")) != 1 or int(param.get("num_class", "0")) > 1
                or len(trees) != booster.num_boosted_rounds()
                or any(t["categories"] for t in trees)):
            return None
        depth = max(1, max(_depth(t, 0) for t in trees))
        if depth > cls.MAX_DEPTH:
            return None
        inner = (1 << depth) - 1
        feature = np.zeros((len(trees), inner), dtype=np.int64)
        threshold = np.full((len(trees), inner), np.inf, dtype=np.float32)
        right_missing = np.zeros((len(trees), inner), dtype=np.bool_)
        leaves = np.zeros((len(trees), inner + 1), dtype=np.float32)
        for k, tree in enumerate(trees):
            # (slot in the complete tree, node); a leaf above the last level fills its whole
            # subtree (its tests send rows either way to the same value)
            stack = [(0, 0)]
            while stack:
                slot, node = stack.pop()
                if slot >= inner:
                    leaves[k, slot - inner] = np.float32(tree["split_conditions"][node])
                    continue
                left = tree["left_children"][node]
                if left == -1:
                    stack += [(2 * slot + 1, node), (2 * slot + 2, node)]
                    continue
                feature[k, slot] = tree["split_indices"][node]
                threshold[k, slot] = np.float32(tree["split_conditions"][node])
                right_missing[k, slot] = not tree["default_left"][node]
                stack += [(2 * slot + 1, left), (2 * slot + 2, tree["right_children"][node])]
        base = float(param["base_score"].strip("[]"))
        forest = cls(objective=objective, base_margin=_base_margin(objective, base),
                     depth=depth, feature=feature, threshold=threshold,
                     right_missing=right_missing, leaves=leaves)
        probe = _probe_rows(feature, threshold, int(param["num_feature"]), cls.PROBE_ROWS)
        with xgb.config_context(nthread=1):
            want = booster.inplace_predict(probe, validate_features=False)
        return forest if np.array_equal(forest.predict(probe), want) else None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """XGBoost's prediction per row of x (rows, features) as float32."""
        from training.models import kernels

        xt = np.ascontiguousarray(np.asarray(x, dtype=np.float32).T)
        out = np.empty(xt.shape[1], dtype=np.float32)
        kernels.forest_outputs(xt, self.base_margin, self.depth, self.feature, self.threshold,
                               self.right_missing, self.leaves,
                               kernels.TRANSFORMS[self.objective], out, _FOREST_BLOCK)
        return out


_FOREST_BLOCK = 1024  # rows per pass of the forest (their feature columns stay in cache)


def _depth(tree: dict[str, Any], node: int) -> int:
    left = tree["left_children"][node]
    if left == -1:
        return 0
    return 1 + max(_depth(tree, left), _depth(tree, tree["right_children"][node]))


def _base_margin(objective: str, base_score: float) -> np.float32:
    """The margin every row starts from: XGBoost's base score through the objective's link."""
    p = np.float32(base_score)
    if objective == "binary:logistic":
        return np.float32(-np.log(np.float64(np.float32(1.0) / p - np.float32(1.0))))
    if objective == "reg:tweedie":
        return np.float32(np.log(np.float64(p)))
    return p


def _probe_rows(feature: np.ndarray, threshold: np.ndarray, n_features: int,
                rows: int) -> np.ndarray:
    """Rows at and just below the ensemble's thresholds, and missing, mixed at random."""
    rng = np.random.default_rng(0)
    out = np.zeros((rows, n_features), dtype=np.float32)
    split = threshold < np.inf
    for f in np.unique(feature[split]):
        cuts = np.unique(threshold[split & (feature == f)])
        values = np.concatenate([cuts, np.nextafter(cuts, np.float32(-np.inf)), [np.nan]])
        out[:, f] = rng.choice(values.astype(np.float32), rows)
    return out

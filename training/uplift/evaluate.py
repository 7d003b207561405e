"""Uplift evaluation maths on a randomised test set: uplift@k, Qini and uplift curves, AUUC,
uplift by decile, and the value of contact policies at a budget. Pure numpy/pandas, no plots
(see `training.uplift.plots`).

Conventions (scikit-uplift 0.5's, so numbers compare one to one with its `sklift.metrics`):

- `treatment` is 0/1 (or bool): 1 = the arm evaluated, 0 = control. For several arms, evaluate
  each arm on its rows and the control rows, with that arm's uplift column.
- Customers are ranked by predicted uplift, highest first; ties keep scikit-uplift's order
  (a stable ascending sort, reversed: of tied customers the later row comes first). The Qini
  and uplift curves are only evaluated at the ends of tied groups, so they do not depend on it.
- uplift@k (`strategy='overall'`): take the top int(k * n) customers of the whole test set;
  uplift@k = mean outcome of the treated among them - mean outcome of the control among them.
  k = 1 gives the average treatment effect of the test set.
- Qini curve at n targeted: Y_T(n) - Y_C(n) * N_T(n) / N_C(n) (incremental outcomes, in
  outcome units, scaled to the treated count); uplift curve: (Y_T/N_T - Y_C/N_C) * n.
- Qini coefficient (`qini_auc_score`) and AUUC (`uplift_auc_score`): area between the curve and
  the straight line to its end point, divided by the same area of the perfect curve (the
  perfect Qini curve allows negative effects: treated responders first, control responders
  last). So 1 = perfect ranking, 0 = random, < 0 = worse than random. AUUC is defined for 0/1
  outcomes only (NaN otherwise); the Qini coefficient of a continuous outcome uses the same
  perfect ordering by y (t - (1 - t)).
- Policy value: the inverse-propensity (IPS) estimate of the incremental outcome, summed over
  the test customers, of giving each one an assigned arm (control = no contact) instead of
  contacting nobody. Propensities are the arms' shares of the test set (the design of a
  randomised campaign). Standard errors treat the per-customer terms as independent.
- Undefined values (an empty group among the top k) are NaN, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.models.uplift.base import CONTROL, UpliftInputError

ArrayLike = npt.ArrayLike
K_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
BUDGETS: tuple[float, ...] = K_GRID


# --------------------------------------------------------------------------------- helpers


def _vec(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise UpliftInputError(f"{name}: empty")
    if not np.isfinite(a).all():
        raise UpliftInputError(f"{name}: contains NaN or infinite values")
    return a


def _inputs(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, u, t = _vec(y, "y"), _vec(uplift, "uplift"), _vec(treatment, "treatment")
    if not (len(yy) == len(u) == len(t)):
        raise UpliftInputError(
            f"lengths differ: y {len(yy)}, uplift {len(u)}, treatment {len(t)}")
    if not np.isin(t, (0.0, 1.0)).all():
        raise UpliftInputError("treatment: expected 0/1 (1 = the arm evaluated, 0 = control)")
    return yy, u, t


def _order(uplift: np.ndarray) -> np.ndarray:
    """Highest uplift first, ties in scikit-uplift's order."""
    return np.argsort(uplift, kind="mergesort")[::-1]


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if a.size else float("nan")


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.trapezoid(y, x))


# --------------------------------------------------------------------------------- uplift@k


def uplift_at_k(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike, k: float = 0.3) -> float:
    """Mean outcome of the treated minus the control among the top int(k n) by uplift."""
    yy, u, t = _inputs(y, uplift, treatment)
    if not 0 < k <= 1:
        raise UpliftInputError(f"k: {k} is not in (0, 1]")
    top = _order(u)[: int(len(yy) * k)]
    yt, tt = yy[top], t[top]
    return _mean(yt[tt == 1]) - _mean(yt[tt == 0])


def uplift_at_ks(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike,
                 ks: Sequence[float] = K_GRID) -> pd.DataFrame:
    """uplift@k for each k (index), with the group sizes and response rates behind it."""
    yy, u, t = _inputs(y, uplift, treatment)
    order = _order(u)
    rows = []
    for k in ks:
        if not 0 < k <= 1:
            raise UpliftInputError(f"k: {k} is not in (0, 1]")
        top = order[: int(len(yy) * k)]
        yt, tt = yy[top], t[top]
        rt, rc = _mean(yt[tt == 1]), _mean(yt[tt == 0])
        rows.append({"k": k, "n": len(top), "n_treated": int(tt.sum()),
                     "n_control": int(len(top) - tt.sum()), "rate_treated": rt,
                     "rate_control": rc, "uplift": rt - rc})
    return pd.DataFrame(rows).set_index("k")


def uplift_by_bins(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike,
                   bins: int = 10) -> pd.DataFrame:
    """Observed uplift in each of `bins` equal-size groups by predicted uplift (highest first).

    Columns: n_treated, n_control, rate_treated, rate_control, uplift (observed) and
    predicted (mean predicted uplift); index 1..bins (1 = highest predicted uplift).
    """
    yy, u, t = _inputs(y, uplift, treatment)
    if not 1 <= bins <= len(yy):
        raise UpliftInputError(f"bins: {bins} is not between 1 and the number of rows")
    rows = []
    for i, idx in enumerate(np.array_split(_order(u), bins), start=1):
        yb, tb = yy[idx], t[idx]
        rt, rc = _mean(yb[tb == 1]), _mean(yb[tb == 0])
        rows.append({"bin": i, "n_treated": int(tb.sum()), "n_control": int(len(idx) - tb.sum()),
                     "rate_treated": rt, "rate_control": rc, "uplift": rt - rc,
                     "predicted": float(u[idx].mean())})
    return pd.DataFrame(rows).set_index("bin")


# ---------------------------------------------------------------------- Qini and uplift curves


def _cumulative(yy: np.ndarray, u: np.ndarray, t: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n, N_T, Y_T, N_C, Y_C) at the end of each group of tied uplift, highest first."""
    order = _order(u)
    ys, us, ts = yy[order], u[order], t[order]
    ends = np.r_[np.flatnonzero(np.diff(us)), len(us) - 1]
    n_t = np.cumsum(ts)[ends]
    y_t = np.cumsum(ys * ts)[ends]
    n = ends + 1.0
    return n, n_t, y_t, n - n_t, np.cumsum(ys * (1 - ts))[ends]


def _from_zero(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.r_[0.0, x], np.r_[0.0, v]


def qini_curve(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
               ) -> tuple[np.ndarray, np.ndarray]:
    """(customers targeted, Qini value) from (0, 0): Y_T - Y_C * N_T / N_C at each threshold."""
    n, n_t, y_t, n_c, y_c = _cumulative(*_inputs(y, uplift, treatment))
    ratio = np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c != 0)
    return _from_zero(n, y_t - y_c * ratio)


def uplift_curve(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(customers targeted, uplift curve value) from (0, 0): (Y_T/N_T - Y_C/N_C) * n."""
    n, n_t, y_t, n_c, y_c = _cumulative(*_inputs(y, uplift, treatment))
    rt = np.divide(y_t, n_t, out=np.zeros_like(y_t), where=n_t != 0)
    rc = np.divide(y_c, n_c, out=np.zeros_like(y_c), where=n_c != 0)
    return _from_zero(n, (rt - rc) * n)


def perfect_qini_curve(y: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The Qini curve of the ordering by y (t - (1 - t)): treated responders first, control
    responders last (negative effects allowed, scikit-uplift's `negative_effect=True`)."""
    yy, t = _vec(y, "y"), _vec(treatment, "treatment")
    return qini_curve(yy, yy * t - yy * (1 - t), t)


def perfect_uplift_curve(y: ArrayLike, treatment: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The best uplift curve for a 0/1 outcome (scikit-uplift's construction)."""
    yy, t = _vec(y, "y"), _vec(treatment, "treatment")
    if not np.isin(yy, (0.0, 1.0)).all():
        raise UpliftInputError("y: the perfect uplift curve needs a 0/1 outcome")
    control_responders = np.sum((yy == 1) & (t == 0))
    treated_non_responders = np.sum((yy == 0) & (t == 1))
    summand = yy if control_responders > treated_non_responders else t
    return uplift_curve(yy, 2.0 * (yy == t) + summand, t)


def _normalised_area(actual: tuple[np.ndarray, np.ndarray],
                     perfect: tuple[np.ndarray, np.ndarray]) -> float:
    xp, vp = perfect
    baseline = _area(np.array([0.0, xp[-1]]), np.array([0.0, vp[-1]]))
    best = _area(xp, vp) - baseline
    return (_area(*actual) - baseline) / best if best != 0 else float("nan")


def qini_auc_score(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """Qini coefficient: area between the Qini curve and random, over the perfect one's."""
    yy, u, t = _inputs(y, uplift, treatment)
    return _normalised_area(qini_curve(yy, u, t), perfect_qini_curve(yy, t))


def uplift_auc_score(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> float:
    """AUUC: area between the uplift curve and random, over the perfect one's (0/1 y; else NaN)."""
    yy, u, t = _inputs(y, uplift, treatment)
    if not np.isin(yy, (0.0, 1.0)).all():
        return float("nan")
    return _normalised_area(uplift_curve(yy, u, t), perfect_uplift_curve(yy, t))


def uplift_metrics(y: ArrayLike, uplift: ArrayLike, treatment: ArrayLike) -> dict[str, float]:
    """The headline numbers of one arm: uplift@10..100%, Qini coefficient, AUUC."""
    table = uplift_at_ks(y, uplift, treatment)
    out = {f"uplift_at_{round(k * 100)}": float(v) for k, v in table["uplift"].items()}
    out["qini_auc"] = qini_auc_score(y, uplift, treatment)
    out["uplift_auc"] = uplift_auc_score(y, uplift, treatment)
    return out


# ----------------------------------------------------------------------------- policy value


def arm_shares(arm: ArrayLike) -> dict[str, float]:
    """Each arm's share of the rows: the assignment probabilities of a randomised test set."""
    names, counts = np.unique(np.asarray(arm, dtype=object).astype(str), return_counts=True)
    return {str(a): c / counts.sum() for a, c in zip(names, counts, strict=True)}


def _ips_terms(y: np.ndarray, arm: np.ndarray, assigned: np.ndarray, control: str,
               propensity: Mapping[str, float] | None) -> np.ndarray:
    """Per customer: y (1[arm = assigned] / p(assigned) - 1[arm = control] / p(control)) when
    assigned a treatment arm, 0 when assigned control; the terms sum to the IPS estimate of
    the incremental outcome of the assignment over contacting nobody."""
    p = dict(propensity) if propensity is not None else arm_shares(arm)
    unknown = sorted(set(assigned) - set(p))
    if unknown or control not in p:
        raise UpliftInputError(f"assigned arms {unknown or [control]} never occur in the test "
                               "set (no propensity): cannot estimate their value")
    pa = np.array([p[a] for a in assigned])
    z = y * ((arm == assigned) / pa - (arm == control) / p[control])
    return np.where(assigned == control, 0.0, z)


def _policy_inputs(y: ArrayLike, arm: ArrayLike, n: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    yy = _vec(y, "y")
    arms = np.asarray(arm, dtype=object).astype(str)
    if len(arms) != len(yy) or (n is not None and n != len(yy)):
        raise UpliftInputError(f"lengths differ: y {len(yy)}, arm {len(arms)}"
                               + (f", policy {n}" if n is not None else ""))
    return yy, arms


def policy_value(y: ArrayLike, arm: ArrayLike, assigned: ArrayLike | str,
                 control: str = CONTROL, propensity: Mapping[str, float] | None = None
                 ) -> tuple[float, float]:
    """(IPS estimate, standard error) of the total incremental outcome over these customers
    of giving customer i arm `assigned[i]` (one name: everyone that arm) vs contacting nobody."""
    yy, arms = _policy_inputs(y, arm)
    a = (np.full(len(yy), assigned, dtype=object) if isinstance(assigned, str)
         else np.asarray(assigned, dtype=object).astype(str))
    if len(a) != len(yy):
        raise UpliftInputError(f"lengths differ: y {len(yy)}, assigned {len(a)}")
    z = _ips_terms(yy, arms, a, control, propensity)
    se = float(np.sqrt(len(z)) * z.std(ddof=1)) if len(z) > 1 else float("nan")
    return float(z.sum()), se


def budget_curve(y: ArrayLike, arm: ArrayLike, score: ArrayLike, assigned: ArrayLike | str,
                 budgets: Sequence[float] = BUDGETS, control: str = CONTROL,
                 propensity: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Policy value when only the top round(b n) customers by `score` (highest first) are
    contacted, each with its `assigned` arm, for each budget share b (index).

    Columns: n_contacted, incremental (IPS total over the test set), se.
    """
    yy, arms = _policy_inputs(y, arm)
    s = _vec(score, "score")
    a = (np.full(len(yy), assigned, dtype=object) if isinstance(assigned, str)
         else np.asarray(assigned, dtype=object).astype(str))
    if not len(s) == len(a) == len(yy):
        raise UpliftInputError(f"lengths differ: y {len(yy)}, score {len(s)}, assigned {len(a)}")
    order = _order(s)
    z = _ips_terms(yy, arms, a, control, propensity)[order]
    s1, s2, n = np.r_[0.0, np.cumsum(z)], np.r_[0.0, np.cumsum(z * z)], len(z)
    rows = []
    for b in budgets:
        if not 0 <= b <= 1:
            raise UpliftInputError(f"budget: {b} is not in [0, 1]")
        m = int(round(b * n))
        var = (s2[m] - s1[m] ** 2 / n) / (n - 1) if n > 1 else float("nan")
        rows.append({"budget": b, "n_contacted": m, "incremental": float(s1[m]),
                     "se": float(np.sqrt(n * max(var, 0.0)))})
    return pd.DataFrame(rows).set_index("budget")


def uplift_policy(uplift: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(score, arm) of uplift targeting: rank by the best arm's predicted uplift, send that arm."""
    values = uplift.to_numpy(dtype=np.float64)
    best = values.argmax(axis=1)
    return values[np.arange(len(values)), best], np.asarray(uplift.columns, dtype=object)[best]


def best_single_arm(y: ArrayLike, arm: ArrayLike, control: str = CONTROL) -> tuple[str, float]:
    """The treatment arm with the largest mean outcome minus control's, and that difference.

    Choose it on training data: picking it on the test set flatters the "everyone" policy."""
    yy, arms = _policy_inputs(y, arm)
    if control not in set(arms):
        raise UpliftInputError(f"arm: no control rows ({control!r})")
    base = yy[arms == control].mean()
    effects = {a: float(yy[arms == a].mean() - base) for a in sorted(set(arms) - {control})}
    if not effects:
        raise UpliftInputError("arm: no treatment arm")
    best = max(effects, key=lambda a: effects[a])
    return best, effects[best]


def compare_policies(
    y: ArrayLike,
    arm: ArrayLike,
    uplift: pd.DataFrame,
    risk: Mapping[str, ArrayLike],
    best_arm: str,
    budgets: Sequence[float] = BUDGETS,
    control: str = CONTROL,
) -> pd.DataFrame:
    """Estimated incremental outcomes at each contact budget, one row per (policy, budget).

    Policies: "uplift" (top by best predicted uplift, its arm; the whole budget is used even
    where the predicted uplift is negative), one per `risk` score (top by
    that score, e.g. churn risk, with `best_arm`), "random" (a random share b with `best_arm`:
    the exact expectation b x everyone, not one draw) and "everyone" (all customers with
    `best_arm`, whatever the budget: the reference). Columns: policy, budget, n_contacted,
    incremental, se, per_1000 (incremental per 1,000 test customers).
    """
    yy, arms = _policy_inputs(y, arm, len(uplift))
    n = len(yy)
    frames = {}
    score, assigned = uplift_policy(uplift)
    frames["uplift"] = budget_curve(yy, arms, score, assigned, budgets, control)
    for name, r in risk.items():
        frames[name] = budget_curve(yy, arms, r, best_arm, budgets, control)
    value, se = policy_value(yy, arms, best_arm, control)
    b = np.asarray(budgets, dtype=np.float64)
    frames["random"] = pd.DataFrame({"n_contacted": np.round(b * n).astype(int),
                                     "incremental": b * value, "se": b * se},
                                    index=pd.Index(b, name="budget"))
    frames["everyone"] = pd.DataFrame({"n_contacted": n, "incremental": value, "se": se},
                                      index=pd.Index(b, name="budget"))
    out = pd.concat(frames, names=["policy"]).reset_index()
    out["per_1000"] = out["incremental"] / n * 1000
    return out

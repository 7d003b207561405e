"""BTYD components fitted at one cutoff, and their outputs as stacking features.

Each cutoff's BG/NBD, Pareto/NBD and Gamma-Gamma are fitted on that cutoff's own features
(events before the cutoff only), so the columns they add never look past the cutoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.models import clv
from training.models.btyd import BetaGeoModel, GammaGammaModel, ParetoNBDModel
from training.models.btyd.paretonbd import _lifetime_integral

COMPONENT_FEATURES: tuple[str, ...] = (
    "bg_p_alive", "bg_expected", "bg_p_zero", "pnbd_p_alive", "pnbd_expected", "gg_spend",
)


# Pareto/NBD's likelihood runs to infinity along s/beta = const when dropout looks homogeneous
# (it does on the BG/NBD-generated synthetic data); the bound ends the fit there, same forecasts.
PNBD_MAX_PARAM = 1e4


@dataclass
class Components:
    """The three BTYD models of one cutoff (day units)."""

    bg: BetaGeoModel
    pnbd: ParetoNBDModel
    gg: GammaGammaModel

    def simulate_spends(self, frame: pd.DataFrame, horizons: Sequence[float], *,
                        draws: int = 200, seed: int = 0) -> list[np.ndarray]:
        """Simulated spend draws of the feature rows over each horizon (`clv.simulate_spends`),
        each row's drawn from its own key (`customer_keys`): the same customer at the same
        as_of gets the same draws in any batch."""
        f, r, t = _summary(frame)
        return clv.simulate_spends(self.bg, self.gg, f, r, t,
                                   frame["monetary_value"].to_numpy(dtype="float64"), horizons,
                                   draws=draws, seed=seed, keys=customer_keys(frame))

    def simulate_summaries(self, frame: pd.DataFrame, horizons: Sequence[float],
                           levels: Sequence[float], *, draws: int = 200,
                           seed: int = 0) -> list[clv.SpendSummary]:
        """Mean and quantiles at `levels` of `simulate_spends`'s draws per horizon
        (`clv.simulate_summaries`: the same numbers, without the draws)."""
        f, r, t = _summary(frame)
        return clv.simulate_summaries(self.bg, self.gg, f, r, t,
                                      frame["monetary_value"].to_numpy(dtype="float64"),
                                      horizons, levels, draws=draws, seed=seed,
                                      keys=customer_keys(frame))

    def params(self) -> dict[str, float]:
        out = {}
        for prefix, model in (("bg", self.bg), ("pnbd", self.pnbd), ("gg", self.gg)):
            out.update({f"{prefix}_{k}": float(v) for k, v in model.params_.items()})
        return out


def fit_components(frame: pd.DataFrame) -> Components:
    """Fit BG/NBD, Pareto/NBD (all customers) and Gamma-Gamma (repeat buyers) on a frame."""
    f, r, t = _summary(frame)
    bg = BetaGeoModel().fit(f, r, t)
    pnbd = ParetoNBDModel(max_param=PNBD_MAX_PARAM).fit(f, r, t)
    repeat = f > 0
    monetary = frame["monetary_value"].to_numpy(dtype="float64")
    repeat &= monetary > 0
    gg = GammaGammaModel().fit(f[repeat], monetary[repeat])
    return Components(bg, pnbd, gg)


def component_features(frame: pd.DataFrame, comp: Components, horizon_days: int) -> pd.DataFrame:
    """The components' predictions for the horizon, as new columns of a copy of `frame`."""
    f, r, t = _summary(frame)
    out = frame.copy()
    h = float(horizon_days)
    p_alive = comp.bg.p_alive(f, r, t)
    out["bg_p_alive"] = p_alive
    out["bg_expected"] = comp.bg.expected_purchases(h, f, r, t)
    out["bg_p_zero"] = bg_p_zero(comp.bg, h, f, r, t)
    pnbd_alive = comp.pnbd.p_alive(f, r, t)
    out["pnbd_p_alive"] = pnbd_alive
    out["pnbd_expected"] = pnbd_expected(comp.pnbd, h, f, t, pnbd_alive)
    monetary = np.clip(frame["monetary_value"].to_numpy(dtype="float64"), 0.0, None)
    out["gg_spend"] = comp.gg.expected_spend(f, monetary)
    return out


def pnbd_expected(pnbd: ParetoNBDModel, t: float, f: np.ndarray, big_t: np.ndarray,
                  p_alive: np.ndarray) -> np.ndarray:
    """`ParetoNBDModel.expected_purchases` given its P(alive), computed once (the same
    expression: P(alive) * (r + x) / (alpha + T) * the expected alive time in the next t)."""
    r, alpha, s, beta = (pnbd.params_[k] for k in ("r", "alpha", "s", "beta"))
    h = np.full(len(f), float(t))
    return p_alive * ((r + f) / (alpha + big_t)) * _lifetime_integral(s, beta + big_t, h)


def bg_p_zero(bg: BetaGeoModel, t: float, frequency: np.ndarray, recency: np.ndarray,
              big_t: np.ndarray) -> np.ndarray:
    """BG/NBD P(no purchase in the next t | x, t_x, T).

    Dropout happens only right after a purchase, so with no purchase an alive customer stays
    alive: P = 1 - P(alive) + P(alive) * ((alpha + T) / (alpha + T + t)) ** (r + x), with r and
    alpha the fitted BG/NBD parameters.
    """
    p_alive = bg.p_alive(frequency, recency, big_t)
    shape, alpha = bg.params_["r"], bg.params_["alpha"]
    stay_quiet = ((alpha + big_t) / (alpha + big_t + t)) ** (shape + frequency)
    return 1.0 - p_alive + p_alive * stay_quiet


def customer_keys(frame: pd.DataFrame) -> np.ndarray:
    """One uint64 per feature row naming whose futures the value simulation draws: a hash of
    (customer_id, as_of as YYYY-MM-DD). A row without a customer id (column absent, null or
    blank) is keyed by its as_of and BTYD summary (frequency, recency, T, monetary_value)
    instead, so identical anonymous rows get identical draws, wherever they are scored."""
    n = len(frame)
    as_of = (pd.to_datetime(frame["as_of"], errors="coerce").dt.strftime("%Y-%m-%d")
             .fillna("").to_numpy(dtype=object) if "as_of" in frame else np.full(n, "", object))
    ids = (frame["customer_id"] if "customer_id" in frame else pd.Series([None] * n))
    ids = ids.astype(object).where(ids.notna(), "").astype(str).str.strip().to_numpy(object)
    named = pd.util.hash_pandas_object(pd.DataFrame({"id": ids, "as_of": as_of}),
                                       index=False).to_numpy(np.uint64, copy=True)
    anonymous = ids == ""
    if anonymous.any():
        summary = frame.loc[anonymous, ["frequency", "recency", "T", "monetary_value"]]
        summary = summary.astype("float64").assign(as_of=as_of[anonymous])
        hashed = pd.util.hash_pandas_object(summary, index=False).to_numpy(np.uint64)
        named[anonymous] = ~hashed
    return named


def _summary(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (frame["frequency"].to_numpy(dtype="float64"),
            frame["recency"].to_numpy(dtype="float64"),
            frame["T"].to_numpy(dtype="float64"))

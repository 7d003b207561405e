"""Customer value maths: simulated spend over horizons, intervals, discounting.

The spread comes from simulating the BG/NBD + Gamma-Gamma posterior of each customer (alive or
not, purchase rate, dropout, spend per purchase); the centre is rescaled to a chosen spend
forecast so the interval and the point forecast agree. The interval's quantile levels can be
calibrated on held-out outcomes (`calibrate_levels`) so that it holds the share it claims.

Inputs are arrays of the BTYD summary per customer: frequency (repeat purchases), recency
(age at the last purchase), T (age) and the mean spend per repeat purchase.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from training.models.btyd import BetaGeoModel, GammaGammaModel
from training.models.errors import ModelInputError


def simulate_spend(bg: BetaGeoModel, gg: GammaGammaModel, frequency: np.ndarray,
                   recency: np.ndarray, T: np.ndarray, monetary: np.ndarray,
                   horizon: float, *, draws: int = 200, seed: int = 0,
                   chunk: int = 50_000) -> np.ndarray:
    """Draws (n_customers x draws) of total spend in the next `horizon_days`.

    BG/NBD given (x, t_x, T): alive ~ Bernoulli(P(alive)); lambda ~ Gamma(r + x, alpha + T);
    p ~ Beta(a, b + x); purchases = min(Poisson(lambda t), Geometric(p)) (dropout follows a
    purchase). Gamma-Gamma: nu ~ Gamma(p x + q, gamma + x m); total ~ Gamma(N p, nu).
    """
    return simulate_spends(bg, gg, frequency, recency, T, monetary, (horizon,), draws=draws,
                           seed=seed, chunk=chunk)[0]


def simulate_spends(bg: BetaGeoModel, gg: GammaGammaModel, frequency: np.ndarray,
                    recency: np.ndarray, T: np.ndarray, monetary: np.ndarray,
                    horizons: Sequence[float], *, draws: int = 200, seed: int = 0,
                    chunk: int = 50_000, groups: Sequence[int] | None = None) -> list[np.ndarray]:
    """`simulate_spend` for several horizons from the same simulated futures, one array each.

    Purchases in a longer horizon are the shorter one's plus Poisson(lambda x the extra days)
    (capped by the same Geometric dropout) and its spend the shorter one's plus
    Gamma(extra purchases x p, nu): sums of independent Poisson and Gamma draws, so each
    horizon's draws have exactly the distribution of a separate simulation. Only what can
    change a total is drawn: rates for alive draws, dropout and nu where a purchase happens
    (dropout from its marginal, `_dropouts`).

    `groups` (row counts of consecutive blocks of rows) draws each block from its own
    generator, exactly as if the block were simulated alone.
    """
    x = np.asarray(frequency, dtype="float64")
    rec = np.asarray(recency, dtype="float64")
    big_t = np.asarray(T, dtype="float64")
    m = np.clip(np.asarray(monetary, dtype="float64"), 0.0, None)
    n = len(x)
    if not len(rec) == len(big_t) == len(m) == n:
        raise ModelInputError(f"frequency, recency, T, monetary: lengths differ "
                              f"({n}, {len(rec)}, {len(big_t)}, {len(m)})")
    p_alive = bg.p_alive(x, rec, big_t)
    order = np.argsort(horizons, kind="stable")
    outs = [np.zeros((n, draws)) for _ in horizons]
    blocks = [n] if groups is None else [int(g) for g in groups]
    if sum(blocks) != n or min(blocks, default=0) < 0:
        raise ModelInputError(f"groups: sizes {blocks} do not add up to {n} rows")
    ends = np.cumsum(blocks)
    for start, end in zip(ends - blocks, ends, strict=True):
        rng = np.random.default_rng(seed)
        for lo in range(int(start), int(end), chunk):
            _simulate(rng, bg.params_, gg.params_, x, big_t, m, p_alive,
                      slice(lo, min(lo + chunk, int(end))), draws, horizons, order, outs)
    return outs


def _simulate(rng: np.random.Generator, bg: dict[str, float], gg: dict[str, float],
              x: np.ndarray, big_t: np.ndarray, m: np.ndarray, p_alive: np.ndarray, s: slice,
              draws: int, horizons: Sequence[float], order: np.ndarray,
              outs: list[np.ndarray]) -> None:
    """Draws of the rows in `s` into `outs` (one array per horizon)."""
    lo = s.start
    cells = np.flatnonzero(rng.random((s.stop - lo, draws)) < p_alive[s, None])
    row = cells // draws + lo
    xa = x[row]
    lam = rng.gamma(bg["r"] + xa, 1.0 / (bg["alpha"] + big_t[row]))
    counts, seen, last = [], 0, 0.0
    for k in order:
        seen = seen + rng.poisson(lam * (float(horizons[k]) - last))
        last = float(horizons[k])
        counts.append(seen)
    buys = np.flatnonzero(counts[-1] > 0)
    cells, row, xb = cells[buys], row[buys], xa[buys]
    xs, code = np.unique(x[s], return_inverse=True)
    dropout = _dropouts(rng, bg["a"], bg["b"], xs, code.ravel()[row - lo],
                        counts[-1][buys])
    nu = rng.gamma(gg["p"] * xb + gg["q"], 1.0 / (gg["gamma"] + xb * m[row]))
    total, before = np.zeros(len(buys)), 0
    for k, seen in zip(order, counts, strict=True):
        bought = np.minimum(seen[buys], dropout)
        more = np.flatnonzero(bought > before)
        total[more] += rng.gamma((bought - before)[more] * gg["p"], 1.0 / nu[more])
        outs[k][s].reshape(-1)[cells] = total
        before = bought


def _dropouts(rng: np.random.Generator, a: float, b: float, xs: np.ndarray, code: np.ndarray,
              cap: np.ndarray) -> np.ndarray:
    """min(G, cap + 1) for G ~ Geometric(p), p ~ Beta(a, b + x): the purchase after which the
    customer drops out, as far as the first `cap` purchases can tell.

    p serves nothing else, so G is drawn from its marginal (beta-geometric) by inversion:
    P(G > k) = B(a, b + x + k) / B(a, b + x) = prod_{i<k} (b + x + i) / (a + b + x + i), and
    G = the first k with P(G > k) <= U. Most draws end their horizon before dropping out
    (U < P(G > cap)); only the others search for G. x = xs[code] per draw.
    """
    if len(code) == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(cap.max()) + 1
    steps = np.log1p(-a / (a + b + xs[:, None] + np.arange(top)[None, :]))
    survive = np.exp(np.concatenate([np.zeros((len(xs), 1)), np.cumsum(steps, axis=1)],
                                    axis=1)).ravel()  # P(G > k) at [code, k], k = 0..top
    base = code * (top + 1)
    u = rng.random(len(code))
    out = cap + 1
    look = np.flatnonzero(u >= survive[base + cap])  # G <= cap
    k = 1
    while len(look):
        found = u[look] >= survive[base[look] + k]
        out[look[found]] = k
        look = look[~found]
        k += 1
    return out


def quantiles(draws: np.ndarray, centre: np.ndarray, levels: tuple[float, float]) -> pd.DataFrame:
    """Interval ends at `levels` and the median per customer (columns lower, median, upper),
    rescaled so the draws' mean equals `centre`."""
    mean = draws.mean(axis=1)
    scale = np.divide(centre, mean, out=np.ones_like(mean), where=mean > 0)
    lo, mid, hi = np.quantile(draws, [levels[0], 0.5, levels[1]], axis=1) * scale
    return pd.DataFrame({"lower": lo, "median": mid, "upper": hi})


def calibrate_levels(draws: np.ndarray, centre: np.ndarray, actual: np.ndarray,
                     target: float = 0.80) -> tuple[float, float]:
    """The symmetric quantile levels whose interval covers `target` of `actual` (held out)."""
    best = (0.10, 0.90)
    best_gap = np.inf
    for half in np.linspace(0.20, 0.49, 30):
        levels = (0.5 - half, 0.5 + half)
        q = quantiles(draws, centre, levels)
        cover = np.mean((actual >= q["lower"] - 1e-9) & (actual <= q["upper"] + 1e-9))
        if abs(cover - target) < best_gap:
            best, best_gap = (float(levels[0]), float(levels[1])), abs(cover - target)
    return best


def discount_factor(horizon_days: float, annual_rate: float, steps: int = 12) -> float:
    """Mean discount over the horizon, assuming purchases spread evenly in it."""
    t = (np.arange(steps) + 0.5) / steps * horizon_days / 365.0
    return float(np.mean((1.0 + annual_rate) ** -t))

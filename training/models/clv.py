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

from training.models import keyed_random
from training.models.btyd import BetaGeoModel, GammaGammaModel
from training.models.errors import ModelInputError


def simulate_spend(bg: BetaGeoModel, gg: GammaGammaModel, frequency: np.ndarray,
                   recency: np.ndarray, T: np.ndarray, monetary: np.ndarray,
                   horizon: float, *, draws: int = 200, seed: int = 0,
                   keys: np.ndarray | None = None, chunk: int = 50_000) -> np.ndarray:
    """Draws (n_customers x draws) of total spend in the next `horizon` days.

    BG/NBD given (x, t_x, T): alive ~ Bernoulli(P(alive)); lambda ~ Gamma(r + x, alpha + T);
    p ~ Beta(a, b + x); purchases = min(Poisson(lambda t), Geometric(p)) (dropout follows a
    purchase). Gamma-Gamma: nu ~ Gamma(p x + q, gamma + x m); total ~ Gamma(N p, nu).
    """
    return simulate_spends(bg, gg, frequency, recency, T, monetary, (horizon,), draws=draws,
                           seed=seed, keys=keys, chunk=chunk)[0]


def simulate_spends(bg: BetaGeoModel, gg: GammaGammaModel, frequency: np.ndarray,
                    recency: np.ndarray, T: np.ndarray, monetary: np.ndarray,
                    horizons: Sequence[float], *, draws: int = 200, seed: int = 0,
                    keys: np.ndarray | None = None, chunk: int = 50_000) -> list[np.ndarray]:
    """`simulate_spend` for several horizons from the same simulated futures, one array each.

    Each row's draws depend only on its key (`keys`, one uint64 per row naming the customer;
    default: the row's position), `seed` and its own inputs: never on the other rows, their
    order or `chunk`. They are counter-based (`keyed_random`), and a row's draws are
    exchangeable (its alive futures come first), which is all means and quantiles need.

    The same futures as `simulate_spend` describes, drawn with the rate integrated out:
    purchases in the longest horizon t ~ NegBin(r + x, (alpha + T) / (alpha + T + t)) for an
    alive customer, capped by the same beta-geometric dropout (`_dropouts`); spend per horizon
    is Gamma(purchases x p, nu), a shorter horizon's spend being part of the longer one's
    (`_simulate`). Only what can change a total is drawn: futures with no purchase in the
    longest horizon are zeros, and dropout and nu are drawn where a purchase happens.
    """
    x = np.asarray(frequency, dtype="float64")
    rec = np.asarray(recency, dtype="float64")
    big_t = np.asarray(T, dtype="float64")
    m = np.clip(np.asarray(monetary, dtype="float64"), 0.0, None)
    n = len(x)
    if not len(rec) == len(big_t) == len(m) == n:
        raise ModelInputError(f"frequency, recency, T, monetary: lengths differ "
                              f"({n}, {len(rec)}, {len(big_t)}, {len(m)})")
    key = np.arange(n, dtype=np.uint64) if keys is None else np.asarray(keys, dtype=np.uint64)
    if len(key) != n:
        raise ModelInputError(f"keys: expected {n} values, got {len(key)}")
    key = keyed_random.seeded(key, seed)
    p_alive = bg.p_alive(x, rec, big_t)
    order = np.argsort(horizons, kind="stable")
    outs = [np.zeros((n, draws)) for _ in horizons]
    for lo in range(0, n, chunk):
        _simulate(bg.params_, gg.params_, x, big_t, m, p_alive, key,
                  slice(lo, min(lo + chunk, n)), draws, horizons, order, outs)
    return outs


# Streams of the counter-based draws (`keyed_random`): one per quantity drawn.
_BUYING, _COUNTS, _DROPOUT, _NU, _SPEND = range(5)
_THIN = 16  # streams _THIN + i: purchases of the i-th horizon from the longest down


def _simulate(bg: dict[str, float], gg: dict[str, float], x: np.ndarray, big_t: np.ndarray,
              m: np.ndarray, p_alive: np.ndarray, key: np.ndarray, s: slice, draws: int,
              horizons: Sequence[float], order: np.ndarray, outs: list[np.ndarray]) -> None:
    """Draws of the rows in `s` into `outs` (one array per horizon).

    Only futures with a purchase in the longest horizon are drawn: their number per row ~
    Binomial(draws, P(alive) x P(N > 0 | alive)), their purchases from the zero-truncated
    NegBin, and each shorter horizon's by thinning (given the rate, the purchases of a
    Poisson process up to t are Binomial(N(t_next), t / t_next) of those up to t_next).
    The other futures spend nothing in any horizon.
    """
    rows = s.stop - s.start
    size, rate = bg["r"] + x[s], bg["alpha"] + big_t[s]
    t_end = float(horizons[order[-1]])
    q = rate / (rate + t_end)
    quiet = np.exp(size * np.log(q))  # P(no purchase in the longest horizon | alive)
    buying = keyed_random.binomials(keyed_random.uniform(key[s], _BUYING), draws,
                                    p_alive[s] * (1.0 - quiet))
    row = np.repeat(np.arange(rows), buying)
    index = np.arange(len(row)) - np.repeat(np.cumsum(buying) - buying, buying)
    cells = row * draws + index
    states = keyed_random.cell_states(key[s][row], index)
    u = keyed_random.uniform(states, _COUNTS)
    u = quiet[row] + u * (1.0 - quiet[row])  # conditioned on N > 0
    counts = [np.maximum(keyed_random.negative_binomials(u, size, q, row), 1)]
    for i in range(len(order) - 1, 0, -1):
        keep = float(horizons[order[i - 1]]) / float(horizons[order[i]])
        u = keyed_random.uniform(states, _THIN + i)
        counts.insert(0, keyed_random.thinned(u, counts[0], keep))
    xb = x[s][row]
    xs, code = np.unique(x[s], return_inverse=True)
    dropout = _dropouts(keyed_random.uniform(states, _DROPOUT), bg["a"], bg["b"], xs,
                        code.ravel()[row], counts[-1])
    nu = (keyed_random.gammas(states, _NU, gg["p"] * xb + gg["q"])
          / (gg["gamma"] + xb * m[s][row]))
    total, before = np.zeros(len(row)), 0
    for step, (k, seen) in enumerate(zip(order, counts, strict=True)):
        bought = np.minimum(seen, dropout)
        more = np.flatnonzero(bought > before)
        total[more] += keyed_random.gammas(states[more], _SPEND + 8 * step,
                                           (bought - before)[more] * gg["p"]) / nu[more]
        outs[k][s].reshape(-1)[cells] = total
        before = bought


def _dropouts(u: np.ndarray, a: float, b: float, xs: np.ndarray, code: np.ndarray,
              cap: np.ndarray) -> np.ndarray:
    """min(G, cap + 1) for G ~ Geometric(p), p ~ Beta(a, b + x): the purchase after which the
    customer drops out, as far as the first `cap` purchases can tell (`u`: one uniform each).

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

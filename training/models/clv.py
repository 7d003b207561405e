"""Customer value maths: simulated spend over horizons, intervals, discounting.

The spread comes from simulating the BG/NBD + Gamma-Gamma posterior of each customer (alive or
not, purchase rate, dropout, spend per purchase); the centre is rescaled to a chosen spend
forecast so the interval and the point forecast agree. The interval's quantile levels can be
calibrated on held-out outcomes (`calibrate_levels`) so that it holds the share it claims.

Inputs are arrays of the BTYD summary per customer: frequency (repeat purchases), recency
(age at the last purchase), T (age) and the mean spend per repeat purchase.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.models import keyed_random
from training.models.btyd import BetaGeoModel, GammaGammaModel
from training.models.btyd.base import distinct_rows
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
    outs = [np.zeros((len(frequency), draws)) for _ in horizons]
    for lo, _hi, cells, totals in _futures(bg, gg, frequency, recency, T, monetary, horizons,
                                           draws=draws, seed=seed, keys=keys, chunk=chunk):
        for out, total in zip(outs, totals, strict=True):
            out.reshape(-1)[cells + lo * draws] = total
    return outs


@dataclass(frozen=True)
class SpendSummary:
    """Per row, over its simulated draws of one horizon: their mean and their quantiles at the
    levels asked for (one row of `quantiles` per level, numpy's linear interpolation)."""

    mean: np.ndarray
    quantiles: np.ndarray


def simulate_summaries(bg: BetaGeoModel, gg: GammaGammaModel, frequency: np.ndarray,
                       recency: np.ndarray, T: np.ndarray, monetary: np.ndarray,
                       horizons: Sequence[float], levels: Sequence[float], *, draws: int = 200,
                       seed: int = 0, keys: np.ndarray | None = None,
                       chunk: int = 50_000) -> list[SpendSummary]:
    """Mean and quantiles at `levels` of each row's `simulate_spends` draws, per horizon: the
    same numbers as `draws.mean(axis=1)` and `np.quantile(draws, levels, axis=1)` of its
    arrays, without holding them (each block of rows is summarised as it is drawn)."""
    n = len(frequency)
    summaries = [SpendSummary(np.zeros(n), np.zeros((len(levels), n))) for _ in horizons]
    for lo, hi, cells, totals in _futures(bg, gg, frequency, recency, T, monetary, horizons,
                                          draws=draws, seed=seed, keys=keys, chunk=chunk):
        for summary, total in zip(summaries, totals, strict=True):
            block = np.zeros((hi - lo, draws))
            block.reshape(-1)[cells] = total
            summary.mean[lo:hi] = block.mean(axis=1)
            block.sort(axis=1)
            summary.quantiles[:, lo:hi] = sorted_quantiles(block, levels)
    return summaries


def sorted_quantiles(rows: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """`np.quantile(rows, levels, axis=1)` (its default linear interpolation, in its order of
    operations) of rows already sorted along axis 1: no partitioning."""
    n = rows.shape[1]
    q = np.asarray(levels, dtype="float64")
    if not np.all((q >= 0) & (q <= 1)):
        raise ModelInputError(f"levels: quantile levels must lie in [0, 1], got {list(q)}")
    out = np.empty((len(q), len(rows)))
    for j, v in enumerate((n - 1) * q):
        if v >= n - 1:  # numpy reads index -1 for both ends, weight v + 1
            below, above, t = n - 1, n - 1, v + 1.0
        else:
            below = int(np.floor(v))
            above, t = below + 1, v - below
        a, b = rows[:, below], rows[:, above]
        diff = b - a
        out[j] = b - diff * (1 - t) if t >= 0.5 else a + diff * t
    return out


def _futures(bg: BetaGeoModel, gg: GammaGammaModel, frequency: np.ndarray,
             recency: np.ndarray, T: np.ndarray, monetary: np.ndarray,
             horizons: Sequence[float], *, draws: int, seed: int, keys: np.ndarray | None,
             chunk: int) -> Iterator[tuple[int, int, np.ndarray, list[np.ndarray]]]:
    """The drawn futures block by block of rows: (first row, end row, cell = row offset from
    the first x draws + draw index, the total of each cell per horizon). Cells not listed
    are zeros in every horizon; every row is in one block."""
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
    for lo in range(0, n, chunk):
        yield from _simulate(bg.params_, gg.params_, x, big_t, m, p_alive, key,
                             slice(lo, min(lo + chunk, n)), draws, horizons, order)


# Streams of the counter-based draws (`keyed_random`): one per quantity drawn.
_BUYING, _COUNTS, _DROPOUT, _NU, _SPEND = range(5)
_THIN = 16  # streams _THIN + i: purchases of the i-th horizon from the longest down
_BLOCK = 1 << 16  # simulated futures per block (their working arrays stay in cache)
_BLOCK_ROWS = 2048  # rows per block at most
_THIN_TABLES = 255  # purchase counts up to which thinning reads tables (above: walks)
_DROPOUT_TABLE = 64  # purchase counts the dropout table holds from the start


def _simulate(bg: dict[str, float], gg: dict[str, float], x: np.ndarray, big_t: np.ndarray,
              m: np.ndarray, p_alive: np.ndarray, key: np.ndarray, s: slice, draws: int,
              horizons: Sequence[float], order: np.ndarray,
              ) -> Iterator[tuple[int, int, np.ndarray, list[np.ndarray]]]:
    """Draws of the rows in `s`, block by block (see `_futures`).

    Only futures with a purchase in the longest horizon are drawn: their number per row ~
    Binomial(draws, P(alive) x P(N > 0 | alive)), their purchases from the zero-truncated
    NegBin, and each shorter horizon's by thinning (given the rate, the purchases of a
    Poisson process up to t are Binomial(N(t_next), t / t_next) of those up to t_next).
    The other futures spend nothing in any horizon. Rows sharing (x, T) share the NegBin's
    inversion tables.
    """
    rows = s.stop - s.start
    size, rate = bg["r"] + x[s], bg["alpha"] + big_t[s]
    t_end = float(horizons[order[-1]])
    q = rate / (rate + t_end)
    quiet = np.exp(size * np.log(q))  # P(no purchase in the longest horizon | alive)
    buying = keyed_random.binomials(keyed_random.uniform(key[s], _BUYING), draws,
                                    p_alive[s] * (1.0 - quiet))
    (sizes, qs), group = distinct_rows(size, q)
    thin = {i: keyed_random.thinning_tables(float(horizons[order[i - 1]])
                                           / float(horizons[order[i]]), _THIN_TABLES)
            for i in range(len(order) - 1, 0, -1)}
    xs, code = np.unique(x[s], return_inverse=True)
    block = _Block(key=key[s], quiet=quiet, group=group, code=code.ravel(), xs=xs,
                   x=x[s], m=m[s], gg=gg, draws=draws, order=order, thin=thin,
                   dropouts=_Dropouts(bg["a"], bg["b"], xs),
                   tables=keyed_random.negative_binomial_tables(sizes, qs))
    ends = np.cumsum(buying)
    lo = 0
    while lo < rows:
        done = int(ends[lo - 1]) if lo else 0
        hi = int(np.searchsorted(ends, done + _BLOCK, side="right"))
        hi = min(max(hi, lo + 1), lo + _BLOCK_ROWS, rows)
        cells, totals = block.draw(lo, buying[lo:hi])
        yield s.start + lo, s.start + hi, cells, totals
        lo = hi


@dataclass
class _Block:
    """What one row slice's futures are drawn from; `draw` takes one block of its rows."""

    key: np.ndarray
    quiet: np.ndarray
    group: np.ndarray
    code: np.ndarray
    xs: np.ndarray
    x: np.ndarray
    m: np.ndarray
    tables: keyed_random.DiscreteTables
    thin: dict[int, keyed_random.ThinningTables]
    gg: dict[str, float]
    draws: int
    order: np.ndarray
    dropouts: _Dropouts

    def draw(self, first: int, buying: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(cell = row offset from `first` x draws + draw index, total per horizon) of the
        futures of rows first, first + 1, ... (`buying` of each). Big blocks are drawn by a
        compiled loop (`kernels.draw_futures`) with the same bits."""
        if int(buying.sum()) >= keyed_random.COMPILED_CELLS and self._compilable():
            return self._draw_compiled(first, buying)
        offset = np.repeat(np.arange(len(buying)), buying)
        index = np.arange(len(offset)) - np.repeat(np.cumsum(buying) - buying, buying)
        return offset * self.draws + index, self._totals(offset + first, index)

    def _totals(self, row: np.ndarray, index: np.ndarray) -> list[np.ndarray]:
        """Total spend per horizon of the futures (row, index): draw `index` of each row."""
        totals: list[np.ndarray] = [np.zeros(0)] * len(self.order)
        if not len(row):
            return totals
        states = keyed_random.cell_states(self.key[row], index)
        u = keyed_random.uniform(states, _COUNTS)
        quiet = self.quiet[row]
        u *= 1.0 - quiet
        u += quiet  # conditioned on N > 0
        counts = [np.maximum(self.tables.invert(u, self.group[row]), 1)]
        for i in range(len(self.order) - 1, 0, -1):
            u = keyed_random.uniform(states, _THIN + i)
            counts.insert(0, self.thin[i].invert(u, counts[0]))
        gg = self.gg
        code = self.code[row]
        dropout = self.dropouts.draw(keyed_random.uniform(states, _DROPOUT), code, counts[-1])
        nu = keyed_random.grouped_gammas(states, _NU, self._nu_shapes(), code)
        xb = self.x[row]
        nu /= gg["gamma"] + xb * self.m[row]
        total, before = np.zeros(len(row)), 0
        for step, (k, seen) in enumerate(zip(self.order, counts, strict=True)):
            bought = np.minimum(seen, dropout)
            extra = bought - before
            shapes = np.arange(int(extra.max()) + 1) * gg["p"]  # per number of purchases
            if bool(np.all(extra > 0)):
                total += keyed_random.grouped_gammas(states, _SPEND + 8 * step, shapes,
                                                     extra) / nu
            else:
                more = np.flatnonzero(extra > 0)
                total[more] += keyed_random.grouped_gammas(
                    states[more], _SPEND + 8 * step, shapes, extra[more]) / nu[more]
            totals[k] = total.copy()
            before = bought
        return totals

    def _nu_shapes(self) -> np.ndarray:
        return self.gg["p"] * self.xs + self.gg["q"]

    @functools.cached_property
    def _kernel_inputs(self) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
        """What `kernels.draw_futures` reads that every block shares: the stream offsets
        (counts, dropout, thinning per shorter horizon, then the Gamma bases of nu and of each
        spend step), the thinning tables as flat arrays, and nu's shape per distinct x."""
        steps = len(self.order)
        streams = np.array(
            [keyed_random.stream_offset(_COUNTS), keyed_random.stream_offset(_DROPOUT)]
            + [keyed_random.stream_offset(_THIN + j + 1) for j in range(steps - 1)]
            + [keyed_random.gamma_base(_NU)]
            + [keyed_random.gamma_base(_SPEND + 8 * step) for step in range(steps)],
            dtype=np.uint64)
        thin = keyed_random.ThinningTables.flat([self.thin[j + 1] for j in range(steps - 1)])
        return streams, thin, self._nu_shapes()

    def _compilable(self) -> bool:
        """Whether the compiled loop can read this block's tables: a dropout table that is
        monotone (grown first to the counts most blocks reach)."""
        if self.dropouts.top < _DROPOUT_TABLE:
            self.dropouts.grow(_DROPOUT_TABLE)
        return self.dropouts.monotone

    def _draw_compiled(self, first: int, buying: np.ndarray
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
        from training.models import kernels  # numba (and LLVM's memory) for big batches only

        n = int(buying.sum())
        rows = slice(first, first + len(buying))
        cells = np.empty(n, dtype=np.int64)
        totals = np.zeros((len(self.order), n))
        redo = np.empty(n, dtype=np.bool_)
        streams, thin, nu_shapes = self._kernel_inputs
        d = self.dropouts  # read at each call: a numpy redraw may have grown it
        kernels.draw_futures(
            np.ascontiguousarray(self.key[rows]), buying.astype(np.int64), self.draws,
            self.quiet[rows], self.group[rows], self.code[rows],
            self.gg["gamma"] + self.x[rows] * self.m[rows], streams, self.tables.flat(), thin,
            (d.guide, d.table, d.width, d.top, d.GUIDE), nu_shapes, float(self.gg["p"]),
            self.order.astype(np.int64), cells, totals, redo)
        again = np.flatnonzero(redo)
        if len(again):
            row, index = np.divmod(cells[again], self.draws)
            for k, total in enumerate(self._totals(row + first, index)):
                totals[k, again] = total
        return cells, list(totals)


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


class _Dropouts:
    """`_dropouts` for many blocks of draws: the P(G > k) table of each x is kept (grown when
    a cap needs more k) and searched from a guide of GUIDE buckets of u, not walked from k = 1.

    P(G > k) is a running product, so it falls with k; the draws whose u is above it at k are
    then the first k's, and min(G, cap + 1) = 1 + min(cap, #{k >= 1: P(G > k) > u}). A table
    that rounding left not monotone is read by `_dropouts` itself.
    """

    GUIDE = 64

    def __init__(self, a: float, b: float, xs: np.ndarray) -> None:
        self.a, self.b, self.xs = a, b, xs
        self.top = -1

    def grow(self, top: int) -> None:
        """Hold P(G > k) for k up to `top` for every x."""
        steps = np.log1p(-self.a / (self.a + self.b + self.xs[:, None]
                                    + np.arange(top)[None, :]))
        survive = np.exp(np.concatenate([np.zeros((len(self.xs), 1)),
                                         np.cumsum(steps, axis=1)], axis=1))  # k = 0..top
        self.monotone = bool(np.all(np.diff(survive, axis=1) <= 0))
        self.top, self.width = top, top + 2
        self.table = np.concatenate([survive, np.full((len(self.xs), 1), -np.inf)],
                                    axis=1).ravel()  # -inf after k = top ends every walk
        # guide[x, b] = #{k >= 1: P(G > k) >= (b + 1) / GUIDE}: those exceed any u of bucket b
        level = np.floor(survive[:, 1:] * self.GUIDE).astype(np.int64)  # k >= 1
        hist = np.zeros((len(self.xs), self.GUIDE + 2), dtype=np.int64)
        rows = np.repeat(np.arange(len(self.xs)), top)
        np.add.at(hist, (rows, np.clip(level, 0, self.GUIDE + 1).ravel()), 1)
        above = hist[:, ::-1].cumsum(axis=1)[:, ::-1]  # above[x, j] = #{level >= j}
        self.guide = above[:, 1:self.GUIDE + 2].ravel()  # b -> #{level >= b + 1}

    def draw(self, u: np.ndarray, code: np.ndarray, cap: np.ndarray) -> np.ndarray:
        """min(G, cap + 1) per draw (x = xs[code])."""
        if len(code) == 0:
            return np.zeros(0, dtype=np.int64)
        top = int(cap.max()) + 1
        if top > self.top:
            self.grow(max(top, 2 * self.top))
        if not self.monotone:
            return _dropouts(u, self.a, self.b, self.xs, code, cap)
        bucket = (u * self.GUIDE).astype(np.int64)
        count = self.guide[code * (self.GUIDE + 1) + bucket]
        np.minimum(count, cap, out=count)
        base = code * self.width
        step = np.flatnonzero(count < cap)
        step = step[self.table[base[step] + count[step] + 1] > u[step]]
        while len(step):
            count[step] += 1
            step = step[count[step] < cap[step]]
            step = step[self.table[base[step] + count[step] + 1] > u[step]]
        count += 1
        return count


def quantiles(draws: np.ndarray, centre: np.ndarray, levels: tuple[float, float]) -> pd.DataFrame:
    """Interval ends at `levels` and the median per customer (columns lower, median, upper),
    rescaled so the draws' mean equals `centre`."""
    return summary_quantiles(SpendSummary(draws.mean(axis=1), np.quantile(
        draws, interval_levels(levels), axis=1)), centre)


def interval_levels(levels: tuple[float, float]) -> list[float]:
    """The quantile levels `quantiles` reads: the interval's lower end, 0.5, its upper end."""
    return [levels[0], 0.5, levels[1]]


def summary_quantiles(summary: SpendSummary, centre: np.ndarray) -> pd.DataFrame:
    """`quantiles` from a summary of the draws at `interval_levels`."""
    mean = summary.mean
    scale = np.divide(centre, mean, out=np.ones_like(mean), where=mean > 0)
    lo, mid, hi = summary.quantiles * scale
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

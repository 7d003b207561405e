"""The value simulation's fast paths give the same numbers as the plain algorithms they replace:
inversion tables against the per-cell walks, grouped Gamma variates (compiled and numpy)
against per-cell ones, compiled normal quantiles against scipy's, the kept dropout table
against its per-block build, summaries against the full draws, and the reasons' partial
ranking against a stable sort. Every comparison is exact."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from training.models import BetaGeoModel, GammaGammaModel, clv, keyed_random
from training.reasons import _ranked

RNG = np.random.default_rng(20240101)
STATES = keyed_random.cell_states(RNG.integers(0, 2**63, 40_000).astype(np.uint64),
                                  RNG.integers(0, 200, 40_000))


def walked_negative_binomials(u, size, p, rows):
    """NegBin by a per-cell walk from 0 or from the mean (the reference)."""
    q = np.clip(p, 1e-300, 1.0 - 1e-16)
    k0 = np.floor(size * (1.0 - q) / q)
    k0[k0 <= keyed_random.START_AT_MEAN] = 0.0
    pmf = np.exp(size * np.log(q))
    cdf = pmf.copy()
    far = k0 > 0
    sf, kf, qf = size[far], k0[far], q[far]
    pmf[far] = np.exp(special.gammaln(sf + kf) - special.gammaln(sf)
                      - special.gammaln(kf + 1.0) + sf * np.log(qf) + kf * np.log1p(-qf))
    cdf[far] = special.betainc(sf, kf + 1.0, qf)
    cell_size, cell_fail = size[rows], 1.0 - q[rows]
    return keyed_random.invert_discrete(
        u, k0.astype(np.int64)[rows], cdf[rows], pmf[rows],
        lambda k, cells: (cell_size[cells] + k) / (k + 1.0) * cell_fail[cells])


def reference_gammas(states, stream, shape):
    """Marsaglia-Tsang one cell list at a time, every quantity per cell (the reference)."""
    out = np.zeros(len(shape))
    small = shape < 1.0
    d = np.where(small, shape + 1.0, shape) - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    todo = np.flatnonzero(shape > 0)
    for attempt in range(keyed_random.ATTEMPTS - 1):
        if not len(todo):
            break
        z = keyed_random.mix64(states[todo] + np.uint64(
            ((stream * keyed_random.ATTEMPTS + attempt + 1) * 0x9E3779B97F4A7C15) % 2**64))
        u_norm = ((z >> np.uint64(32)).astype("float64") + 0.5) * 2.0 ** -32
        u_acc = ((z & np.uint64(0xFFFFFFFF)).astype("float64") + 0.5) * 2.0 ** -32
        v = c[todo] * special.ndtri(u_norm) + 1.0
        z2 = special.ndtri(u_norm) ** 2
        v = v * v * v
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (v > 0) & ((u_acc < 1.0 - 0.0331 * z2 * z2)
                            | (np.log(u_acc) < 0.5 * z2 + d[todo] - d[todo] * v
                               + d[todo] * np.log(v)))
        out[todo[ok]] = (d[todo] * v)[ok]
        todo = todo[~ok]
    boost = np.flatnonzero(small & (shape > 0))
    out[boost] *= keyed_random.uniform(states[boost], stream * keyed_random.ATTEMPTS
                                       + keyed_random.ATTEMPTS - 1) ** (1.0 / shape[boost])
    return out


@pytest.mark.parametrize("top", [keyed_random.TABLE_TOP, 0.5])
def test_negative_binomial_tables_read_what_the_walks_reach(top):
    groups = 600
    size = np.concatenate([RNG.uniform(0.3, 6, groups - 60), RNG.uniform(20, 300, 60)])
    p = np.concatenate([RNG.uniform(0.02, 0.98, groups - 60), RNG.uniform(0.1, 0.8, 60)])
    rows = RNG.integers(0, groups, len(STATES))
    u = keyed_random.uniform(STATES, 3)
    tables = keyed_random.negative_binomial_tables(size, p, top=top)
    # typical u; u above the tables' top (the walks continue past them); u near 0
    for cells in (u, 1.0 - (1.0 + u) * 5e-7, u * 1e-12):
        want = walked_negative_binomials(cells, size, p, rows)
        np.testing.assert_array_equal(tables.invert(cells, rows), want)
        np.testing.assert_array_equal(keyed_random.negative_binomials(cells, size, p, rows),
                                      want)


@pytest.mark.parametrize("keep", [90 / 365, 0.5, 0.97])
def test_thinning_tables_read_what_the_walks_reach(keep):
    n = RNG.integers(0, 40, len(STATES))
    n[:30] = RNG.integers(300, 3000, 30)  # beyond the tables: walked
    u = keyed_random.uniform(STATES, 4)
    tables = keyed_random.ThinningTables(keep, 255)
    for cells in (u, 1.0 - u * 1e-9):
        np.testing.assert_array_equal(tables.invert(cells, n),
                                      keyed_random.thinned(cells, n, keep))


def test_gamma_variates_match_the_reference_and_their_grouped_form():
    shapes = np.array([0.05, 0.4, 0.999, 1.0, 2.5, 6.5, 13.0, 80.0])
    group = RNG.integers(0, len(shapes), len(STATES))
    want = reference_gammas(STATES, 7, shapes[group])
    np.testing.assert_array_equal(keyed_random.gammas(STATES, 7, shapes[group]), want)
    np.testing.assert_array_equal(keyed_random.grouped_gammas(STATES, 7, shapes, group), want)
    # below COMPILED_CELLS the attempts run in numpy: the same numbers
    small = keyed_random.COMPILED_CELLS // 4
    assert len(STATES) >= keyed_random.COMPILED_CELLS
    np.testing.assert_array_equal(
        keyed_random.grouped_gammas(STATES[:small], 7, shapes, group[:small]), want[:small])
    with_zero = np.concatenate([[0.0], shapes])  # shape 0: a zero, drawing nothing
    np.testing.assert_array_equal(
        keyed_random.grouped_gammas(STATES, 7, with_zero, group + (group % 2)),
        reference_gammas(STATES, 7, with_zero[group + (group % 2)]))


def test_compiled_normal_quantiles_are_scipys():
    from training.models import kernels

    edge = np.exp(-2.0)
    u = np.concatenate([
        RNG.random(20_000), RNG.random(200) * 1e-20, 1.0 - RNG.random(200) * 1e-12,
        [0.0, 1.0, 0.5, 1e-300, 5e-324, np.exp(-32.0), edge, 1.0 - edge],
        np.nextafter(edge, [0.0, 1.0]), np.nextafter(1.0 - edge, [0.0, 1.0])])
    out = np.empty_like(u)
    kernels.normals(u, out)  # the centre in one pass, then the tails
    np.testing.assert_array_equal(out, special.ndtri(u))
    np.testing.assert_array_equal([kernels.ndtri(v) for v in u], special.ndtri(u))


def test_kept_dropout_table_reads_what_the_per_block_search_finds():
    xs = np.array([0.0, 1.0, 3.0, 12.0, 40.0])
    dropouts = clv._Dropouts(1.06, 13.6, xs)
    for block in range(4):  # caps grow between blocks: the table grows with them
        cells = STATES[block * 10_000:(block + 1) * 10_000]
        u = keyed_random.uniform(cells, 9)
        code = RNG.integers(0, len(xs), len(cells))
        cap = RNG.integers(1, 10 * (block + 1) ** 2, len(cells))
        np.testing.assert_array_equal(dropouts.draw(u, code, cap),
                                      clv._dropouts(u, 1.06, 13.6, xs, code, cap))


BG = BetaGeoModel()
BG.params_ = {"r": 0.8, "alpha": 40.0, "a": 0.9, "b": 6.0}
GG = GammaGammaModel()
GG.params_ = {"p": 5.0, "q": 3.5, "gamma": 20.0}


def test_summaries_are_the_mean_and_quantiles_of_the_draws():
    n = 1500
    x = RNG.integers(0, 30, n).astype(float)
    t = RNG.uniform(1, 700, n)
    rec = t * RNG.uniform(0, 1, n) * (x > 0)
    m = RNG.gamma(2.0, 30.0, n)
    keys = RNG.integers(0, 2**63, n).astype(np.uint64)
    levels = [0.13, 0.5, 0.87]
    draws = clv.simulate_spends(BG, GG, x, rec, t, m, (90, 365, 30), draws=120, keys=keys)
    summaries = clv.simulate_summaries(BG, GG, x, rec, t, m, (90, 365, 30), levels, draws=120,
                                       keys=keys, chunk=400)
    for want, got in zip(draws, summaries, strict=True):
        np.testing.assert_array_equal(got.mean, want.mean(axis=1))
        np.testing.assert_array_equal(got.quantiles, np.quantile(want, levels, axis=1))


def test_quantiles_of_sorted_rows_are_numpys():
    rows = RNG.gamma(0.5, 100.0, (500, 200)) * (RNG.uniform(size=(500, 200)) < 0.4)
    levels = [0.0, 0.02, 0.1, 0.31, 0.5, 0.5 + 0.29, 0.9, 0.99, 1.0]
    np.testing.assert_array_equal(clv.sorted_quantiles(np.sort(rows, axis=1), levels),
                                  np.quantile(rows, levels, axis=1))


def test_partial_ranking_is_the_stable_sorts():
    values = RNG.integers(-3, 4, (400, 9)) * 0.5
    values[RNG.uniform(size=values.shape) < 0.2] = -0.0
    for data in (values, np.where(RNG.uniform(size=values.shape) < 0.05, np.nan, values)):
        order = np.argsort(-data, axis=1, kind="stable")
        for limit in (1, 3, 12):
            np.testing.assert_array_equal(_ranked(data, limit, largest=True),
                                          order[:, :limit])
            np.testing.assert_array_equal(_ranked(data, limit, largest=False),
                                          order[:, ::-1][:, :limit])


def _population(n: int) -> tuple[np.ndarray, ...]:
    x = RNG.integers(0, 30, n).astype(float)
    x[: n // 10] = RNG.integers(100, 400, n // 10)  # heavy buyers: counts past the tables
    t = RNG.uniform(1, 700, n)
    rec = t * RNG.uniform(0, 1, n) * (x > 0)
    return x, rec, t, RNG.gamma(2.0, 30.0, n), RNG.integers(0, 2**63, n).astype(np.uint64)


@pytest.mark.parametrize("case", ["typical", "shapes below one", "past the tables"])
def test_compiled_draws_are_the_numpy_draws(case, monkeypatch):
    """Big blocks are drawn by `kernels.draw_futures`, small ones in numpy: the same draws and
    summaries, including the cells the compiled loop hands back (counts past a table, small
    shapes)."""
    gg = GG
    if case == "shapes below one":
        gg = GammaGammaModel()
        gg.params_ = {"p": 0.6, "q": 0.5, "gamma": 20.0}
    if case == "past the tables":
        nb_tables = keyed_random.negative_binomial_tables
        monkeypatch.setattr(keyed_random, "negative_binomial_tables",
                            lambda size, p: nb_tables(size, p, top=0.5))
        monkeypatch.setattr(clv, "_THIN_TABLES", 3)
        monkeypatch.setattr(clv, "_DROPOUT_TABLE", 2)
    x, rec, t, m, keys = _population(1200)
    horizons, levels = (90, 365, 30), [0.0, 0.1, 0.5, 0.9, 1.0]
    compiled = clv.simulate_spends(BG, gg, x, rec, t, m, horizons, draws=150, keys=keys)
    summaries = clv.simulate_summaries(BG, gg, x, rec, t, m, horizons, levels, draws=150,
                                       keys=keys)
    assert (compiled[1] > 0).sum() >= 4 * keyed_random.COMPILED_CELLS  # blocks run compiled
    monkeypatch.setattr(keyed_random, "COMPILED_CELLS", 10**12)
    plain = clv.simulate_spends(BG, gg, x, rec, t, m, horizons, draws=150, keys=keys)
    plain_summaries = clv.simulate_summaries(BG, gg, x, rec, t, m, horizons, levels,
                                             draws=150, keys=keys)
    for got, want in zip(compiled, plain, strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(summaries, plain_summaries, strict=True):
        np.testing.assert_array_equal(got.mean, want.mean)
        np.testing.assert_array_equal(got.quantiles, want.quantiles)

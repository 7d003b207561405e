"""Counter-based random numbers: every draw is a hash of (key, cell, stream), not a generator's
next value, so what one customer draws does not depend on who else is simulated with it.

A cell's state is `cell_states(keys, index)` (one 64-bit word per customer key and draw
index); stream `s` of a cell is splitmix64's output at `state + (s + 1) * golden`, split into
two 32-bit uniforms. Distributions are then drawn from the uniforms: discrete ones by inverting
their CDF (`invert_discrete`; cells sharing a distribution read the same walk from
`DiscreteTables`), Gamma by Marsaglia-Tsang with one stream per attempt (compiled,
`kernels.gamma_attempts`, for big batches; the same bits in numpy for small ones). Everything
is vectorised over cells; no state is kept between calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import special

_MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment: streams of one cell
CELL = 0xD1B54A32D192ED03  # another odd constant: cells of one key
MIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_M2 = np.uint64(0x94D049BB133111EB)
TO_UNIT = 2.0 ** -32
ATTEMPTS = 1 << 16  # streams reserved per Gamma variate (one per Marsaglia-Tsang attempt)
START_AT_MEAN = 16.0  # NegBin means above which inversion starts at the mean, not at 0
TABLE_TOP = 1.0 - 2.0 ** -24  # CDF up to which inversion tables are taken (u above: walks)
GUIDE = 64  # buckets of u per inversion table (a power of 2)
COMPILED_CELLS = 4096  # cells from which Gamma attempts run compiled (`kernels`)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64, every output bit depending on every
    input bit) of `z`; `z` itself is overwritten when it is a uint64 array."""
    z = np.asarray(z, dtype=np.uint64)
    z ^= z >> np.uint64(30)
    z *= MIX_M1
    z ^= z >> np.uint64(27)
    z *= MIX_M2
    z ^= z >> np.uint64(31)
    return z


def seeded(keys: np.ndarray, seed: int) -> np.ndarray:
    """Keys combined with a seed: another seed gives unrelated draws for the same keys."""
    return mix64(np.asarray(keys, dtype=np.uint64) ^ mix64(np.array([seed & _MASK],
                                                                  dtype=np.uint64))[0])


def cell_states(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The state of draw `index` of each key (elementwise)."""
    step = np.asarray(index, dtype=np.uint64) + np.uint64(1)
    return mix64(np.asarray(keys, dtype=np.uint64) + step * np.uint64(CELL))


def stream_offset(stream: int) -> int:
    """What a cell's state is shifted by for `stream` (before mixing)."""
    return ((stream + 1) * GOLDEN) & _MASK


def gamma_base(stream: int) -> int:
    """The first of the streams a Gamma variate of `stream` reads (one per attempt)."""
    return stream * ATTEMPTS


def _mixed(states: np.ndarray, stream: int) -> np.ndarray:
    """mix64(states + stream's offset) as a new array, with one scratch array for the shifts."""
    z = np.add(states, np.uint64(stream_offset(stream)), dtype=np.uint64)
    tmp = np.empty_like(z)
    for shift, mult in ((30, MIX_M1), (27, MIX_M2)):
        np.right_shift(z, np.uint64(shift), out=tmp)
        z ^= tmp
        z *= mult
    np.right_shift(z, np.uint64(31), out=tmp)
    z ^= tmp
    return z


def uniform(states: np.ndarray, stream: int) -> np.ndarray:
    """U(0, 1) (53-bit resolution, never 0 or 1) from `stream` of each cell."""
    z = _mixed(states, stream)
    z >>= np.uint64(11)
    out = z.astype("float64")
    out += 0.5
    out *= 2.0 ** -53
    return out


def uniforms(states: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent U(0, 1) arrays (32-bit resolution, never 0 or 1) from `stream` of each
    cell."""
    z = _mixed(states, stream)
    lo = (z & np.uint64(0xFFFFFFFF)).astype("float64")
    z >>= np.uint64(32)
    hi = z.astype("float64")
    for half in (hi, lo):
        half += 0.5
        half *= TO_UNIT
    return hi, lo


def gammas(states: np.ndarray, stream: int, shape: np.ndarray) -> np.ndarray:
    """Gamma(shape, 1) per cell (Marsaglia and Tsang 2000), from streams
    `stream * ATTEMPTS + attempt`; shape < 1 as Gamma(shape + 1) * U ** (1 / shape)."""
    shape = np.asarray(shape, dtype="float64")
    return grouped_gammas(states, stream, shape, None)


def grouped_gammas(states: np.ndarray, stream: int, shapes: np.ndarray,
                   group: np.ndarray | None) -> np.ndarray:
    """`gammas` of shape shapes[group] per cell (shapes itself when group is None): what
    depends on the shape alone is computed once per distinct shape."""
    shapes = np.asarray(shapes, dtype="float64")
    small = shapes < 1.0
    d = np.where(small, shapes + 1.0, shapes)
    d -= 1.0 / 3.0
    c = 9.0 * d
    np.sqrt(c, out=c)
    np.divide(1.0, c, out=c)
    positive = shapes > 0
    group = (np.arange(len(shapes)) if group is None
             else np.asarray(group, dtype=np.int64))
    out = np.zeros(len(states))
    base = gamma_base(stream)
    if len(states) >= COMPILED_CELLS:
        from training.models import kernels  # numba (and LLVM's memory) for big batches only

        kernels.gamma_attempts(np.asarray(states, dtype=np.uint64), np.uint64(base),
                               ATTEMPTS - 1, d, c, positive, group, out)
    else:
        _gamma_attempts(states, base, d[group], c[group], positive[group], out)
    boosted = small & positive
    if bool(boosted.any()):  # numpy's power, as the draws have always taken it
        boost = np.flatnonzero(boosted[group])
        shape = shapes[group[boost]]
        u = uniform(states[boost], base + ATTEMPTS - 1)
        out[boost] *= u ** (1.0 / shape)
    return out


def _gamma_attempts(states: np.ndarray, base: int, d: np.ndarray, c: np.ndarray,
                    positive: np.ndarray, out: np.ndarray) -> None:
    """`kernels.gamma_attempts` in numpy (per cell d, c): the same operations in the same
    order, attempt by attempt over the cells still rejected."""
    todo = None if bool(positive.all()) else np.flatnonzero(positive)
    for attempt in range(ATTEMPTS - 1):
        if todo is not None and not len(todo):
            break
        st, dt, ct = ((states, d, c) if todo is None else (states[todo], d[todo], c[todo]))
        u_norm, u_acc = uniforms(st, base + attempt)
        z = special.ndtri(u_norm)
        v = np.multiply(ct, z, out=u_norm)
        v += 1.0
        cube = v * v
        cube *= v
        v = cube
        z *= z
        ok = v > 0
        # The squeeze 1 - 0.0331 z^4 decides most draws without the logarithms.
        squeeze = 0.0331 * z
        squeeze *= z
        np.subtract(1.0, squeeze, out=squeeze)
        doubt = np.flatnonzero(ok & (u_acc >= squeeze))
        if len(doubt):
            with np.errstate(invalid="ignore", divide="ignore"):
                vd, dd = v[doubt], dt[doubt]
                ok[doubt] = (np.log(u_acc[doubt])
                             < 0.5 * z[doubt] + dd - dd * vd + dd * np.log(vd))
        v *= dt
        if todo is None:
            np.copyto(out, v, where=ok)
            todo = np.flatnonzero(~ok)
        else:
            out[todo[ok]] = v[ok]
            todo = todo[~ok]


def invert_discrete(u: np.ndarray, k: np.ndarray, cdf: np.ndarray, pmf: np.ndarray,
                    ratio: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """The smallest k with CDF(k) >= u per cell, walking from a start k (near the answer, e.g.
    the mean) whose CDF and pmf are given; `ratio(k, cells)` = pmf(k + 1) / pmf(k).

    Steps taken are about the distance from the start, so starting at the mean costs a few
    standard deviations at most.
    """
    k = np.array(k, dtype=np.int64, copy=True)
    up = np.flatnonzero(u > cdf)
    c, p, kk = cdf[up], pmf[up], k[up]
    while len(up):
        p = p * ratio(kk, up)
        kk = kk + 1
        c = c + p
        stop = (u[up] <= c) | (p <= 0)
        k[up[stop]] = kk[stop]
        keep = ~stop
        up, c, p, kk = up[keep], c[keep], p[keep], kk[keep]
    down = np.flatnonzero((u <= cdf - pmf) & (k > 0))
    c, p, kk = cdf[down] - pmf[down], pmf[down], k[down]
    while len(down):  # c = CDF(kk - 1) >= u: step down to kk - 1
        p = p / ratio(kk - 1, down)
        kk = kk - 1
        k[down] = kk
        go = (kk > 0) & (u[down] <= c - p) & np.isfinite(p)
        down, c, p, kk = down[go], c[go] - p[go], p[go], kk[go]
    return k


def binomials(u: np.ndarray, n: int, p: np.ndarray) -> np.ndarray:
    """Binomial(n, p) per cell by inversion of the uniforms `u`."""
    p = np.clip(np.asarray(p, dtype="float64"), 0.0, 1.0)
    q = np.clip(p, 1e-300, 1.0 - 1e-16)
    k0 = np.clip(np.floor(n * q), 0, n).astype(np.int64)
    cdf = np.where(k0 >= n, 1.0, special.betainc(np.maximum(n - k0, 1), k0 + 1, 1.0 - q))
    logpmf = (special.gammaln(n + 1.0) - special.gammaln(k0 + 1.0) - special.gammaln(n - k0 + 1.0)
              + k0 * np.log(q) + (n - k0) * np.log1p(-q))
    odds = q / (1.0 - q)

    def ratio(k: np.ndarray, cells: np.ndarray) -> np.ndarray:
        return np.where(k < n, (n - k) / (k + 1.0) * odds[cells], 0.0)

    out = invert_discrete(u, k0, cdf, np.exp(logpmf), ratio)
    return np.where(p <= 0.0, 0, np.where(p >= 1.0, n, out))


class DiscreteTables:
    """`invert_discrete`'s walks for cells that share a distribution, taken once per group.

    Group g's walk starts at k0[g] with CDF cdf[g] and pmf pmf[g]; `ratio(k, groups)` =
    pmf(k + 1) / pmf(k). The table holds, for each k the walks can reach, the value a walk
    compares u with there: going down, CDF(k0) - pmf(k0) - pmf(k0 - 1) - ... in the walk's own
    order of operations; going up, CDF(k0) + pmf(k0 + 1) + ... (infinite where the pmf
    reached 0: the walk stops there). Both are monotone in floating point, so a cell's answer
    is low[g] + the number of its group's entries below u, the same k its walk reaches; a
    guide of GUIDE buckets of u per group starts each search near its end. Up-walks are taken
    until the CDF reaches `top`; the rare u above it continue by `invert_discrete` from there.
    u must lie in (0, 1].
    """

    def __init__(self, k0: np.ndarray, cdf: np.ndarray, pmf: np.ndarray,
                 ratio: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                 top: float = TABLE_TOP) -> None:
        k0 = np.asarray(k0, dtype=np.int64)
        cdf, pmf = np.asarray(cdf, dtype="float64"), np.asarray(pmf, dtype="float64")
        n = len(k0)
        groups, ks, values = [np.arange(n)], [k0], [cdf]
        # Down: the walk's c - p while it may still go on (k > 0, p finite, c - p > 0 >= no u).
        g = np.flatnonzero((k0 > 0) & (cdf - pmf > 0))
        c, p, kk = (cdf - pmf)[g], pmf[g], k0[g]
        while len(g):
            groups.append(g)
            ks.append(kk - 1)
            values.append(c)
            p = p / ratio(kk - 1, g)
            kk = kk - 1
            c = c - p
            go = (kk > 0) & (c > 0) & np.isfinite(p)
            g, c, p, kk = g[go], c[go], p[go], kk[go]
        # Up: c + p until c >= top (the rest continue later) or p = 0 (the walk stops).
        self.end_k, self.end_c, self.end_p = k0.copy(), cdf.copy(), pmf.copy()
        g = np.flatnonzero(cdf < top)
        c, p, kk = cdf[g], pmf[g], k0[g]
        while len(g):
            p = p * ratio(kk, g)
            kk = kk + 1
            c = c + p
            groups.append(g)
            ks.append(kk)
            values.append(np.where(p > 0, c, np.inf))
            self.end_k[g], self.end_c[g], self.end_p[g] = kk, c, p
            go = (p > 0) & (c < top)
            g, c, p, kk = g[go], c[go], p[go], kk[go]
        group, k, value = np.concatenate(groups), np.concatenate(ks), np.concatenate(values)
        self.low = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(self.low, group, k)
        size = np.bincount(group, minlength=n) + 1  # + a NaN sentinel after each group
        self.start = np.concatenate([[0], np.cumsum(size)])
        self.values = np.full(self.start[-1], np.nan)
        self.values[self.start[group] + (k - self.low[group])] = value
        self.sentinel = self.start[1:] - 1
        self.offset = self.low - self.start[:-1]  # k = table position + offset[group]
        # guide[g, b] = position of g's first entry >= b / GUIDE (entries below it are < u)
        with np.errstate(invalid="ignore"):
            bucket = np.floor(self.values * GUIDE) + 1.0
        bucket = np.nan_to_num(np.clip(bucket, 0, GUIDE + 1), nan=GUIDE + 1).astype(np.int64)
        owner = np.repeat(np.arange(n), size)
        counts = np.bincount(owner * (GUIDE + 2) + bucket, minlength=n * (GUIDE + 2))
        self.guide = (counts.reshape(n, GUIDE + 2).cumsum(axis=1)[:, :GUIDE + 1]
                      + self.start[:-1, None]).ravel()
        self.top, self.ratio = top, ratio

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """(guide, values, offset, sentinel, top): what a compiled reader of the tables needs
        (`kernels.draw_futures`)."""
        return self.guide, self.values, self.offset, self.sentinel, self.top

    def invert(self, u: np.ndarray, group: np.ndarray) -> np.ndarray:
        """The k each cell's walk reaches (u per cell, `group` its distribution)."""
        u = np.asarray(u, dtype="float64")
        at = (u * GUIDE).astype(np.int64)  # exact: GUIDE is a power of 2
        at += group * (GUIDE + 1)
        pos = self.guide[at]
        step = np.flatnonzero(self.values[pos] < u)
        while len(step):
            pos[step] += 1
            step = step[self.values[pos[step]] < u[step]]
        past = np.flatnonzero(u > self.top)
        k = pos + self.offset[group]
        if len(past):
            past = past[pos[past] == self.sentinel[group[past]]]
        if len(past):
            g = group[past]
            k[past] = invert_discrete(u[past], self.end_k[g], self.end_c[g], self.end_p[g],
                                      lambda kk, cells: self.ratio(kk, g[cells]))
        return k


def negative_binomial_tables(size: np.ndarray, p: np.ndarray, *,
                             top: float = TABLE_TOP) -> DiscreteTables:
    """Inversion tables of NegBin(size[g], p[g]) per group g (see `negative_binomials`)."""
    size = np.asarray(size, dtype="float64")
    q = np.clip(np.asarray(p, dtype="float64"), 1e-300, 1.0 - 1e-16)
    k0 = np.floor(size * (1.0 - q) / q)
    k0[k0 <= START_AT_MEAN] = 0.0
    pmf = np.exp(size * np.log(q))
    cdf = pmf.copy()
    far = np.flatnonzero(k0 > 0)
    if len(far):
        sf, kf, qf = size[far], k0[far], q[far]
        pmf[far] = np.exp(special.gammaln(sf + kf) - special.gammaln(sf)
                          - special.gammaln(kf + 1.0) + sf * np.log(qf) + kf * np.log1p(-qf))
        cdf[far] = special.betainc(sf, kf + 1.0, qf)
    fail = 1.0 - q

    def ratio(k: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return (size[groups] + k) / (k + 1.0) * fail[groups]

    return DiscreteTables(k0.astype(np.int64), cdf, pmf, ratio, top=top)


def negative_binomials(u: np.ndarray, size: np.ndarray, p: np.ndarray,
                       rows: np.ndarray) -> np.ndarray:
    """NegBin(size, p) per cell by inversion of `u` (failures before the size-th success, real
    size > 0, success probability p < 1): the Poisson count of a Gamma(size, rate) rate over
    a window w when p = rate / (rate + w). `size` and `p` are per group (e.g. customer) and
    `rows` the group of each cell; each walk starts at 0 for small means, else at the floor of
    the mean (its CDF from the incomplete beta), and is read from the group's tables."""
    return negative_binomial_tables(size, p).invert(u, np.asarray(rows, dtype=np.int64))


class ThinningTables:
    """Inversion tables of Binomial(n, keep) for every n up to `most` (see `thinned`)."""

    def __init__(self, keep: float, most: int) -> None:
        self.keep, self.most = keep, most
        n = np.arange(most + 1, dtype=np.int64)
        pmf = np.exp(n * np.log1p(-keep))
        odds = keep / (1.0 - keep)

        def ratio(k: np.ndarray, groups: np.ndarray) -> np.ndarray:
            return np.maximum(n[groups] - k, 0) / (k + 1.0) * odds

        self.tables = DiscreteTables(np.zeros(len(n), dtype=np.int64), pmf, pmf, ratio)

    @staticmethod
    def flat(tables: list[ThinningTables]) -> tuple[np.ndarray, ...]:
        """Several tables as one set of arrays for a compiled reader (`kernels.draw_futures`):
        (keep, most, guide, values, offset, sentinel, top) with each table's groups after the
        previous one's, and the first group of each."""
        keep = np.array([t.keep for t in tables], dtype="float64")
        most = np.array([t.most for t in tables], dtype=np.int64)
        top = np.array([t.tables.top for t in tables], dtype="float64")
        guides, values, offsets, sentinels, first = [], [], [], [], [0]
        at = 0
        for t in tables:
            guide, value, offset, sentinel, _ = t.tables.flat()
            guides.append(guide + at)
            values.append(value)
            offsets.append(offset - at)
            sentinels.append(sentinel + at)
            first.append(first[-1] + len(offset))
            at += len(value)
        joined = [np.concatenate(part) if part else np.zeros(1, dtype=dtype)
                  for part, dtype in ((guides, np.int64), (values, "float64"),
                                      (offsets, np.int64), (sentinels, np.int64))]
        return (keep, most, *joined, top, np.array(first[:-1], dtype=np.int64))

    def invert(self, u: np.ndarray, n: np.ndarray) -> np.ndarray:
        """Binomial(n, keep) per cell from `u`; n beyond `most` by `thinned`'s walk."""
        n = np.asarray(n, dtype=np.int64)
        if not 0.0 < self.keep < 1.0:
            return thinned(u, n, self.keep)
        big = np.flatnonzero(n > self.most)
        if not len(big):
            return self.tables.invert(u, n)
        out = np.empty(len(n), dtype=np.int64)
        small = np.flatnonzero(n <= self.most)
        out[small] = self.tables.invert(u[small], n[small])
        out[big] = _thinned_walk(u[big], n[big], self.keep)
        return out


@functools.lru_cache(maxsize=16)
def thinning_tables(keep: float, most: int) -> ThinningTables:
    """`ThinningTables(keep, most)`, built once per (keep, most): read-only, and the same for
    every batch of a horizon pair."""
    return ThinningTables(keep, most)


def thinned(u: np.ndarray, n: np.ndarray, keep: float) -> np.ndarray:
    """Binomial(n, keep) per cell by inversion of `u` (walking up from 0: cheap for small n)."""
    n = np.asarray(n, dtype=np.int64)
    if keep >= 1.0:
        return n.copy()
    if keep <= 0.0:
        return np.zeros_like(n)
    return _thinned_walk(u, n, keep)


def _thinned_walk(u: np.ndarray, n: np.ndarray, keep: float) -> np.ndarray:
    pmf = np.exp(n * np.log1p(-keep))
    odds = keep / (1.0 - keep)

    def ratio(k: np.ndarray, cells: np.ndarray) -> np.ndarray:
        return np.maximum(n[cells] - k, 0) / (k + 1.0) * odds

    return invert_discrete(u, np.zeros(len(n), dtype=np.int64), pmf, pmf, ratio)

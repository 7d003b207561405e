"""Counter-based random numbers: every draw is a hash of (key, cell, stream), not a generator's
next value, so what one customer draws does not depend on who else is simulated with it.

A cell's state is `cell_states(keys, index)` (one 64-bit word per customer key and draw
index); stream `s` of a cell is splitmix64's output at `state + (s + 1) * golden`, split into
two 32-bit uniforms. Distributions are then drawn from the uniforms: discrete ones by inverting
their CDF (`invert_discrete`), Gamma by Marsaglia-Tsang with one stream per attempt.
Everything is vectorised over cells; no state is kept between calls.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment: streams of one cell
_CELL = 0xD1B54A32D192ED03  # another odd constant: cells of one key
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0 ** -32
ATTEMPTS = 1 << 16  # streams reserved per Gamma variate (one per Marsaglia-Tsang attempt)
START_AT_MEAN = 16.0  # NegBin means above which inversion starts at the mean, not at 0


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection of uint64, every output bit depending on every
    input bit) of `z`; `z` itself is overwritten when it is a uint64 array."""
    z = np.asarray(z, dtype=np.uint64)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def seeded(keys: np.ndarray, seed: int) -> np.ndarray:
    """Keys combined with a seed: another seed gives unrelated draws for the same keys."""
    return mix64(np.asarray(keys, dtype=np.uint64) ^ mix64(np.array([seed & _MASK],
                                                                  dtype=np.uint64))[0])


def cell_states(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The state of draw `index` of each key (elementwise)."""
    step = np.asarray(index, dtype=np.uint64) + np.uint64(1)
    return mix64(np.asarray(keys, dtype=np.uint64) + step * np.uint64(_CELL))


def uniform(states: np.ndarray, stream: int) -> np.ndarray:
    """U(0, 1) (53-bit resolution, never 0 or 1) from `stream` of each cell."""
    z = mix64(states + np.uint64(((stream + 1) * _GOLDEN) & _MASK))
    z >>= np.uint64(11)
    out = z.astype("float64")
    out += 0.5
    out *= 2.0 ** -53
    return out


def uniforms(states: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent U(0, 1) arrays (32-bit resolution, never 0 or 1) from `stream` of each
    cell."""
    z = mix64(states + np.uint64(((stream + 1) * _GOLDEN) & _MASK))
    hi = ((z >> np.uint64(32)).astype("float64") + 0.5) * _TO_UNIT
    lo = ((z & np.uint64(0xFFFFFFFF)).astype("float64") + 0.5) * _TO_UNIT
    return hi, lo


def gammas(states: np.ndarray, stream: int, shape: np.ndarray) -> np.ndarray:
    """Gamma(shape, 1) per cell (Marsaglia and Tsang 2000), from streams
    `stream * ATTEMPTS + attempt`; shape < 1 as Gamma(shape + 1) * U ** (1 / shape)."""
    shape = np.asarray(shape, dtype="float64")
    out = np.zeros(len(shape))
    small = shape < 1.0
    a = np.where(small, shape + 1.0, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    todo = np.flatnonzero(shape > 0)
    base = stream * ATTEMPTS
    for attempt in range(ATTEMPTS - 1):
        if not len(todo):
            break
        u_norm, u_acc = uniforms(states[todo], base + attempt)
        z = special.ndtri(u_norm)
        dt = d[todo]
        v = c[todo] * z
        v += 1.0
        v = v * v * v
        z *= z
        ok = v > 0
        # The squeeze 1 - 0.0331 z^4 decides most draws without the logarithms.
        doubt = np.flatnonzero(ok & (u_acc >= 1.0 - 0.0331 * z * z))
        with np.errstate(invalid="ignore", divide="ignore"):
            vd, dd = v[doubt], dt[doubt]
            ok[doubt] = np.log(u_acc[doubt]) < 0.5 * z[doubt] + dd - dd * vd + dd * np.log(vd)
        out[todo[ok]] = (dt * v)[ok]
        todo = todo[~ok]
    boost = np.flatnonzero(small & (shape > 0))
    if len(boost):
        u = uniform(states[boost], base + ATTEMPTS - 1)
        out[boost] *= u ** (1.0 / shape[boost])
    return out


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


def negative_binomials(u: np.ndarray, size: np.ndarray, p: np.ndarray,
                       rows: np.ndarray) -> np.ndarray:
    """NegBin(size, p) per cell by inversion of `u` (failures before the size-th success, real
    size > 0, success probability p < 1): the Poisson count of a Gamma(size, rate) rate over
    a window w when p = rate / (rate + w). `size` and `p` are per group (e.g. customer) and
    `rows` the group of each cell, so the start of each walk is computed once per group:
    0 for small means, else the floor of the mean (its CDF from the incomplete beta)."""
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
    cell_size, cell_fail = size[rows], 1.0 - q[rows]

    def ratio(k: np.ndarray, cells: np.ndarray) -> np.ndarray:
        return (cell_size[cells] + k) / (k + 1.0) * cell_fail[cells]

    return invert_discrete(u, k0.astype(np.int64)[rows], cdf[rows], pmf[rows], ratio)


def thinned(u: np.ndarray, n: np.ndarray, keep: float) -> np.ndarray:
    """Binomial(n, keep) per cell by inversion of `u` (walking up from 0: cheap for small n)."""
    n = np.asarray(n, dtype=np.int64)
    if keep >= 1.0:
        return n.copy()
    if keep <= 0.0:
        return np.zeros_like(n)
    pmf = np.exp(n * np.log1p(-keep))
    odds = keep / (1.0 - keep)

    def ratio(k: np.ndarray, cells: np.ndarray) -> np.ndarray:
        return np.maximum(n[cells] - k, 0) / (k + 1.0) * odds

    return invert_discrete(u, np.zeros(len(n), dtype=np.int64), pmf, pmf, ratio)

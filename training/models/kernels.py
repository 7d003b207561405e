"""Compiled inner loops of batch scoring (numba): the simulated futures (NegBin and thinning
table reads, dropouts, Gamma draws), tree ensemble predictions and TreeSHAP table sums.

Each kernel is a loop over cells that the numpy code it replaces runs as a sequence of
whole-array passes; the arithmetic is the same operations in the same order, so the numbers
are the same bits (`tests/test_simulation_fast_paths.py` compares them). The loops hold no
Python objects and release the GIL, so scoring threads run them in parallel. Division follows
numpy (a zero divisor gives inf or NaN, not an exception), which also leaves branch-free loops
free to vectorise. Compiled code is cached beside this module (or in numba's user cache when
that folder is read-only).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from training.models.keyed_random import ATTEMPTS, CELL, GOLDEN, GUIDE, MIX_M1, MIX_M2, TO_UNIT

_GOLDEN = np.uint64(GOLDEN)
_LOW32 = np.uint64(0xFFFFFFFF)
_CELL = np.uint64(CELL)
_TO_UNIT53 = 2.0 ** -53
_ONE = np.float32(1.0)
_SIGMOID_CAP = np.float32(88.7)  # XGBoost's sigmoid: 1 / (exp(min(-x, 88.7)) + 1 + 1e-16)
_SIGMOID_EPS = np.float32(1e-16)

# Inverse normal CDF (Cephes ndtri, as scipy.special.ndtri evaluates it): rational
# approximations in the centre and in two tail ranges.
_S2PI = 2.50662827463100050242e0
_EXP_M2 = 0.13533528323661269189
_P0 = (-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
       1.39312609387279679503e1, -1.23916583867381258016e0)
_Q0 = (1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
       -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
       1.59056225126211695515e1, -1.18331621121330003142e0)
_P1 = (4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
       4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
       -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4)
_Q1 = (1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
       1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
       -3.80806407691578277194e-2, -9.33259480895457427372e-4)
_P2 = (3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
       1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
       3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9)
_Q2 = (6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
       2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
       2.89247864745380683936e-6, 6.79019408009981274425e-9)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _polevl(x: float, coef: tuple) -> float:
    ans = coef[0]
    for i in range(1, len(coef)):
        ans = ans * x + coef[i]
    return ans


@numba.njit(cache=True, error_model="numpy", inline="always")
def _p1evl(x: float, coef: tuple) -> float:
    """_polevl with a leading coefficient of 1 (not stored)."""
    ans = x + coef[0]
    for i in range(1, len(coef)):
        ans = ans * x + coef[i]
    return ans


@numba.njit(cache=True, error_model="numpy", inline="always")
def _centre(y0: float) -> float:
    """ndtri of y0 in its centre range, exp(-2) < y0 <= 1 - exp(-2)."""
    y = y0 - 0.5
    y2 = y * y
    x = y + y * (y2 * _polevl(y2, _P0) / _p1evl(y2, _Q0))
    return x * _S2PI


@numba.njit(cache=True, error_model="numpy")
def normals(u: np.ndarray, out: np.ndarray) -> None:
    """ndtri of each u into out: the centre range in one branch-free pass (it vectorises),
    then the tails one by one."""
    for i in range(u.shape[0]):
        out[i] = _centre(u[i])
    for i in range(u.shape[0]):
        if not (_EXP_M2 < u[i] <= 1.0 - _EXP_M2):
            out[i] = ndtri(u[i])


@numba.njit(cache=True, error_model="numpy", inline="always")
def ndtri(y0: float) -> float:
    """The standard normal quantile of y0 in [0, 1] (NaN outside)."""
    if y0 == 0.0:
        return -math.inf
    if y0 == 1.0:
        return math.inf
    if y0 < 0.0 or y0 > 1.0 or y0 != y0:
        return math.nan
    negate = True
    y = y0
    if y > 1.0 - _EXP_M2:
        y = 1.0 - y
        negate = False
    if y > _EXP_M2:
        return _centre(y)
    x = math.sqrt(-2.0 * math.log(y))
    x0 = x - math.log(x) / x
    z = 1.0 / x
    p, q = (_P1, _Q1) if x < 8.0 else (_P2, _Q2)  # y above or below exp(-32)
    x1 = z * _polevl(z, p) / _p1evl(z, q)
    x = x0 - x1
    return -x if negate else x


@numba.njit(cache=True, error_model="numpy", inline="always")
def _mix64(z: np.uint64) -> np.uint64:
    z ^= z >> np.uint64(30)
    z *= MIX_M1
    z ^= z >> np.uint64(27)
    z *= MIX_M2
    z ^= z >> np.uint64(31)
    return z


@numba.njit(cache=True, error_model="numpy", inline="always")
def _attempt(x: float, u_acc: float, dg: float, cg: float) -> float:
    """One Marsaglia-Tsang attempt at Gamma(dg + 1/3) (cg = 1 / sqrt(9 dg)) from its normal
    variate x and uniform u_acc: the draw, or -1.0 when rejected."""
    v = cg * x
    v += 1.0
    v = (v * v) * v
    x2 = x * x
    ok = v > 0
    if ok and u_acc >= 1.0 - (0.0331 * x2) * x2:
        ok = math.log(u_acc) < 0.5 * x2 + dg - dg * v + dg * math.log(v)
    return v * dg if ok else -1.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _attempt_word(state: np.uint64, base: np.uint64, a: int) -> np.uint64:
    """The 64 random bits of attempt a: its two 32-bit uniforms (`keyed_random.uniforms`)."""
    return _mix64(state + (base + np.uint64(a + 1)) * _GOLDEN)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _halves(z: np.uint64) -> tuple[float, float]:
    """The uniforms of an attempt's bits: the normal's (high half), the acceptance's (low)."""
    return ((np.float64(z >> np.uint64(32)) + 0.5) * TO_UNIT,
            (np.float64(z & _LOW32) + 0.5) * TO_UNIT)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _gamma(state: np.uint64, base: np.uint64, attempts: int, dg: float, cg: float,
           first: int = 0) -> float:
    """Marsaglia-Tsang Gamma(dg + 1/3) of one cell from attempt `first` on: attempt a reads
    the two 32-bit uniforms of stream base + a (`keyed_random.uniforms`); 0 if every one
    fails."""
    for a in range(first, attempts):
        u_norm, u_acc = _halves(_attempt_word(state, base, a))
        g = _attempt(ndtri(u_norm), u_acc, dg, cg)
        if g >= 0.0:
            return g
    return 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _gamma_from(x: float, z: np.uint64, state: np.uint64, base: np.uint64, attempts: int,
                dg: float, cg: float) -> float:
    """`_gamma` whose first attempt's bits z and normal x are already drawn."""
    g = _attempt(x, _halves(z)[1], dg, cg)
    return g if g >= 0.0 else _gamma(state, base, attempts, dg, cg, 1)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def gamma_attempts(states: np.ndarray, base: np.uint64, attempts: int, d: np.ndarray,
                   c: np.ndarray, positive: np.ndarray, group: np.ndarray,
                   out: np.ndarray) -> None:
    """Marsaglia-Tsang Gamma(d + 1/3) per cell (shape group[cell]; 0 where not positive)."""
    for i in range(states.shape[0]):
        g = group[i]
        out[i] = _gamma(states[i], base, attempts, d[g], c[g]) if positive[g] else 0.0


@numba.njit(cache=True, error_model="numpy", inline="always")
def _uniform(state: np.uint64, offset: np.uint64) -> float:
    """`keyed_random.uniform` of one cell (offset: the stream's multiple of GOLDEN)."""
    return (np.float64(_mix64(state + offset) >> np.uint64(11)) + 0.5) * _TO_UNIT53


@numba.njit(cache=True, error_model="numpy", inline="always")
def _read_table(u: float, g: int, guide: np.ndarray, values: np.ndarray, offset: np.ndarray,
                sentinel: np.ndarray, top: float) -> int:
    """`keyed_random.DiscreteTables.invert` of one cell of group g; -1 where the walk goes on
    past the table (u above its top)."""
    pos = guide[np.int64(u * GUIDE) + g * (GUIDE + 1)]
    while values[pos] < u:
        pos += 1
    if u > top and pos == sentinel[g]:
        return -1
    return pos + offset[g]


_SUB = 4096  # cells whose first Gamma attempts' normal variates are computed together


@numba.njit(cache=True, error_model="numpy", nogil=True)
def draw_futures(keys: np.ndarray, buying: np.ndarray, draws: int, row_quiet: np.ndarray,
                 row_group: np.ndarray, row_code: np.ndarray, row_scale: np.ndarray,
                 streams: np.ndarray, negbin: tuple, thin: tuple, dropout: tuple,
                 nu_shape: np.ndarray, spend_p: float, order: np.ndarray,
                 cells: np.ndarray, totals: np.ndarray, redo: np.ndarray) -> None:
    """The futures `clv._Block.draw` draws, one cell at a time: the first buying[r] draws of
    each row r (its key keys[r]) with a purchase in the longest horizon; per cell its number
    (row x draws + index) and its spend per horizon (totals[k], k the horizon's position).

    Cells whose draw leaves what the tables hold (a count past a table's top, a Gamma shape
    below 1) are marked in `redo` for the numpy draw. streams: the stream offsets of counts,
    dropout, thinning (per shorter horizon), and the Gamma bases of nu and of each spend step.

    Cells go _SUB at a time: first their purchases and dropouts, with the bits of each Gamma
    draw's first attempt; then those attempts' normal variates in one pass (`normals`); then
    the Gamma draws and totals.
    """
    nb_guide, nb_values, nb_offset, nb_sentinel, nb_top = negbin
    th_keep, th_most, th_guide, th_values, th_offset, th_sentinel, th_top, th_row = thin
    dr_guide, dr_table, dr_width, dr_top, dr_buckets = dropout
    steps = order.shape[0]
    slots = steps + 1  # per cell: nu's Gamma, then each spend step's
    state = np.empty(_SUB, dtype=np.uint64)
    live = np.empty(_SUB, dtype=np.bool_)
    drop = np.empty(_SUB, dtype=np.int64)
    row = np.empty(_SUB, dtype=np.int64)
    counts = np.empty((_SUB, steps), dtype=np.int64)
    word = np.empty(_SUB * slots, dtype=np.uint64)
    u_norm = np.empty(_SUB * slots)
    normal = np.empty(_SUB * slots)
    r, index, cell = 0, 0, 0
    while cell < cells.shape[0]:
        n = 0
        while n < _SUB and cell + n < cells.shape[0]:
            while index >= buying[r]:
                r += 1
                index = 0
            j, c = n, cell + n
            n += 1
            st = _mix64(keys[r] + np.uint64(index + 1) * _CELL)
            cells[c] = r * draws + index
            index += 1
            state[j], row[j] = st, r
            quiet, code = row_quiet[r], row_code[r]
            u = _uniform(st, streams[0])
            u = u * (1.0 - quiet)
            u = u + quiet
            k = _read_table(u, row_group[r], nb_guide, nb_values, nb_offset, nb_sentinel,
                            nb_top)
            counts[j, steps - 1] = max(k, 1)
            ok = k >= 0
            for i in range(steps - 2, -1, -1):  # thinning to each shorter horizon
                m = counts[j, i + 1]
                if th_keep[i] >= 1.0:
                    counts[j, i] = m
                elif th_keep[i] <= 0.0:
                    counts[j, i] = 0
                elif m > th_most[i] or not ok:
                    ok = False
                    counts[j, i] = 0
                else:
                    u = _uniform(st, streams[2 + i])
                    counts[j, i] = _read_table(u, th_row[i] + m, th_guide, th_values,
                                               th_offset, th_sentinel, th_top[i])
                    ok = counts[j, i] >= 0
            cap = counts[j, steps - 1]
            for i in range(j * slots, (j + 1) * slots):
                u_norm[i] = 0.5  # a slot without a draw: a cheap placeholder
            redo[c] = not ok or cap + 1 > dr_top or nu_shape[code] < 1.0
            if redo[c]:
                live[j] = False
                continue
            u = _uniform(st, streams[1])
            out = min(dr_guide[code * (dr_buckets + 1) + np.int64(u * dr_buckets)], cap)
            base = code * dr_width
            while out < cap and dr_table[base + out + 1] > u:
                out += 1
            drop[j] = out + 1
            word[j * slots] = _attempt_word(st, streams[steps + 1], 0)
            before = 0
            for step in range(steps):
                bought = min(counts[j, step], drop[j])
                if bought > before:
                    if np.float64(bought - before) * spend_p < 1.0:
                        redo[c] = True
                        break
                    word[j * slots + 1 + step] = _attempt_word(st, streams[steps + 2 + step], 0)
                    u_norm[j * slots + 1 + step] = _halves(word[j * slots + 1 + step])[0]
                before = bought
            live[j] = not redo[c]
            if live[j]:
                u_norm[j * slots] = _halves(word[j * slots])[0]
        normals(u_norm[:n * slots], normal[:n * slots])
        for j in range(n):
            if not live[j]:
                continue
            c, st, code = cell + j, state[j], row_code[row[j]]
            nu_d = nu_shape[code] - 1.0 / 3.0
            nu_c = 1.0 / math.sqrt(9.0 * nu_d)
            nu = (_gamma_from(normal[j * slots], word[j * slots], st, streams[steps + 1],
                              ATTEMPTS - 1, nu_d, nu_c)
                  if nu_shape[code] > 0 else 0.0)
            nu = nu / row_scale[row[j]]
            total, before = 0.0, 0
            for step in range(steps):
                bought = min(counts[j, step], drop[j])
                extra = bought - before
                if extra > 0:
                    d = np.float64(extra) * spend_p - 1.0 / 3.0
                    at = j * slots + 1 + step
                    total += _gamma_from(normal[at], word[at], st, streams[steps + 2 + step],
                                         ATTEMPTS - 1, d, 1.0 / math.sqrt(9.0 * d)) / nu
                totals[order[step], c] = total
                before = bought
        cell += n


@numba.njit(cache=True, error_model="numpy", nogil=True)
def tree_table_sums(bins: np.ndarray, tree_start: np.ndarray, feature: np.ndarray,
                    step_at: np.ndarray, steps: np.ndarray, column_at: np.ndarray,
                    columns: np.ndarray, out: np.ndarray, block: int) -> None:
    """Per row, for each tree in order: its cell (the sum of steps[step_at[e] + bin] over the
    tree's entries e), then columns[column_at[e] + cell] added to out[feature[e], row] in
    float32 (`boosted.ShapTables`). bins: (features, rows), the global bin of each value.
    Rows go `block` at a time through every tree, so one tree's tables stay in cache."""
    rows = out.shape[1]
    cell = np.empty(block, dtype=np.int64)
    for lo in range(0, rows, block):
        n = min(block, rows - lo)
        for t in range(tree_start.shape[0] - 1):
            first, end = tree_start[t], tree_start[t + 1]
            table = steps[step_at[first]:]
            where = bins[feature[first], lo:lo + n]
            for i in range(n):
                cell[i] = table[where[i]]
            for e in range(first + 1, end):
                table = steps[step_at[e]:]
                where = bins[feature[e], lo:lo + n]
                for i in range(n):
                    cell[i] += table[where[i]]
            for e in range(first, end):
                column = columns[column_at[e]:]
                acc = out[feature[e], lo:lo + n]
                for i in range(n):
                    acc[i] += column[cell[i]]


# Output transforms of `forest_outputs` (XGBoost's, in float32): the margin itself, exp of it
# (log-link objectives), or XGBoost's sigmoid (binary:logistic).
IDENTITY, EXP, SIGMOID = 0, 1, 2
TRANSFORMS = {"reg:squarederror": IDENTITY, "reg:tweedie": EXP, "binary:logistic": SIGMOID}


@numba.njit(cache=True, error_model="numpy", nogil=True)
def forest_outputs(xt: np.ndarray, base: np.float32, depth: int, feature: np.ndarray,
                   threshold: np.ndarray, right_missing: np.ndarray, leaves: np.ndarray,
                   transform: int, out: np.ndarray, block: int) -> None:
    """XGBoost's prediction per row of xt (features, rows; float32) from complete trees of
    `depth` (node j's children 2j + 1 and 2j + 2; a row goes right when its value is not
    below the threshold, or is missing and the node sends missing right): base plus each
    tree's leaf in tree order, summed in float32, then `transform`d.

    Per tree and block of rows, every node's test is taken for every row at once (one bit
    each), then each row's path is read from its bits: no branch depends on the data."""
    n_trees, inner = feature.shape
    rows = xt.shape[1]
    mask = np.empty(block, dtype=np.uint64)
    for lo in range(0, rows, block):
        n = min(block, rows - lo)
        acc = out[lo:lo + n]
        acc[:] = base
        for t in range(n_trees):
            mask[:n] = 0
            for j in range(inner):
                column = xt[feature[t, j], lo:lo + n]
                cut, missing_right = threshold[t, j], right_missing[t, j]
                bit = np.uint64(1) << np.uint64(j)
                for r in range(n):
                    v = column[r]
                    if (v >= cut) | ((v != v) & missing_right):
                        mask[r] |= bit
            for r in range(n):
                node, bits = 0, mask[r]
                for _ in range(depth):
                    node = 2 * node + 1 + np.int64((bits >> np.uint64(node)) & np.uint64(1))
                acc[r] += leaves[t, node - inner]
    if transform == EXP:
        for r in range(rows):
            out[r] = math.exp(out[r])
    elif transform == SIGMOID:
        for r in range(rows):
            denom = math.exp(min(-out[r], _SIGMOID_CAP)) + _ONE + _SIGMOID_EPS
            out[r] = _ONE / denom

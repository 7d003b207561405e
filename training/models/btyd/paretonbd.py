"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987; Fader & Hardie's 2005 derivation notes).

While alive a customer buys at Poisson rate lambda ~ Gamma(r, rate alpha); the lifetime is
exponential with rate mu ~ Gamma(s, rate beta), so dropout can happen at any time (not only
after a purchase, unlike BG/NBD). From (x, t_x, T) the model gives P(alive) and expected
purchases in any horizon.

The likelihood needs the integral over the unobserved death time tau in (t_x, T],

    F(t) = int_t^inf (alpha + tau)^-(r+x) (beta + tau)^-(s+1) dtau,

a Gauss hypergeometric function (Fader & Hardie's note, eqs. 19-20). It is evaluated here in
log space after Euler's transformation, 2F1(a, b; a+1; z) = (1-z)^(1-b) 2F1(1, a+1-b; a+1; z),
which moves all growth into an explicit power and leaves a bounded 2F1 with first parameter 1:
no overflow however large x or the ratio of alpha and beta.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.integrate import IntegrationWarning, quad
from scipy.special import expit, gammaln, hyp2f1

from training.models.btyd.base import (
    ArrayLike,
    BaseModel,
    check_durations,
    check_horizon,
    check_rfm,
    distinct_rows,
    factorize,
    wsum,
)

# Central-difference step on log-parameters: the truncation error (~h^2) and the round-off
# error of the mean log-likelihood (~1e-15 / h) are both far below the optimiser's tolerance.
_FD_STEP = 1e-5


def _log_f(theta: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """ln F(t) for each (x, t) (see the module docstring).

    scipy's 2F1 stops converging for very large x with z near 1 (x in the hundreds and
    alpha/beta beyond ~15); those entries, NaN there, are integrated numerically instead.
    """
    r, alpha, s, beta = theta
    c = r + s + x
    with np.errstate(invalid="ignore", divide="ignore"):
        if alpha >= beta:
            hyp = hyp2f1(1.0, r + x, c + 1.0, (alpha - beta) / (alpha + t))
            out = -(r + x) * np.log(alpha + t) - s * np.log(beta + t) + np.log(hyp) - np.log(c)
        else:
            hyp = hyp2f1(1.0, s + 1.0, c + 1.0, (beta - alpha) / (beta + t))
            out = ((1.0 - r - x) * np.log(alpha + t) - (s + 1.0) * np.log(beta + t)
                   + np.log(hyp) - np.log(c))
    out = np.asarray(out, dtype=np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        xb, tb = np.broadcast_arrays(np.asarray(x, dtype=np.float64),
                                     np.asarray(t, dtype=np.float64))
        out[bad] = _log_f_gauss(theta, xb[bad], tb[bad])
    return out


_EDGES = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 700.0])
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(48)


def _log_f_gauss(theta: np.ndarray, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """`_log_f_quad` for many (x, t) at once: fixed Gauss-Legendre rules on the same v-axis
    pieces, vectorised, so a fit with many fallback entries stays fast."""
    r, alpha, s, beta = theta
    lo, hi = _EDGES[:-1, None], _EDGES[1:, None]
    v = ((hi - lo) / 2 * _GL_NODES + (hi + lo) / 2).ravel()
    w = ((hi - lo) / 2 * _GL_WEIGHTS).ravel()
    x, t = x[:, None], t[:, None]
    scale = min(alpha, beta) + t
    tau = t + scale * np.expm1(v)[None, :]
    log_g = -(r + x) * np.log(alpha + tau) - (s + 1.0) * np.log(beta + tau)
    g0 = -(r + x) * np.log(alpha + t) - (s + 1.0) * np.log(beta + t)
    total = np.sum(np.exp(log_g - g0 + v[None, :]) * w[None, :], axis=1) * scale[:, 0]
    return (g0[:, 0] + np.log(total)).astype(np.float64)


def _log_f_quad(theta: np.ndarray, x: float, t: float) -> float:
    """ln F(t) by adaptive quadrature, scaled by the integrand at t (the fallback of `_log_f`).

    With tau = t + c (e^v - 1), c = min(alpha, beta) + t, the integrand decays in v on a scale
    of order one whatever the parameters; the v-axis is split at powers of two.
    """
    r, alpha, s, beta = theta

    def log_g(tau: float) -> float:
        return -(r + x) * np.log(alpha + tau) - (s + 1.0) * np.log(beta + tau)

    g0, scale = log_g(t), min(alpha, beta) + t

    def integrand(v: float) -> float:
        return np.exp(log_g(t + scale * np.expm1(v)) - g0 + v) * scale

    edges = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 700.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)
        total = sum(quad(integrand, lo, hi, epsabs=0.0, epsrel=1e-12, limit=200)[0]
                    for lo, hi in zip(edges[:-1], edges[1:], strict=False))
    return float(g0 + np.log(total))


def _log1mexp(u: np.ndarray) -> np.ndarray:
    """ln(1 - exp(u)) for u <= 0 (-inf at u = 0); absolute error ~1e-16 everywhere, which is
    what a sum of log-likelihood terms needs."""
    with np.errstate(divide="ignore"):
        return np.log(-np.expm1(u))


def _log_dead_term(theta: np.ndarray, x: np.ndarray, tx: np.ndarray,
                   big_t: np.ndarray) -> np.ndarray:
    """ln(s (F(t_x) - F(T))): the likelihood branch "died in (t_x, T]" (without A1)."""
    return _dead(theta, _log_f(theta, x, tx), _log_f(theta, x, big_t))


def _dead(theta: np.ndarray, lf_rec: np.ndarray, lf_t: np.ndarray) -> np.ndarray:
    """`_log_dead_term` from ln F(t_x) and ln F(T)."""
    # F decreases in t; guard the rounding of equal arguments.
    return np.log(theta[2]) + lf_rec + _log1mexp(np.minimum(lf_t - lf_rec, 0.0))


def _log_alive_term(theta: np.ndarray, x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """ln((alpha + T)^-(r+x) (beta + T)^-s): the branch "alive at T" (without A1)."""
    r, alpha, s, beta = theta
    return -(r + x) * np.log(alpha + big_t) - s * np.log(beta + big_t)


@dataclass(frozen=True)
class _Terms:
    """Distinct (x, t_x, T) rows; F is evaluated once per distinct (x, t) over t_x and T."""

    n: float
    xs: np.ndarray  # distinct x and customers per x (for the gammaln terms)
    wx: np.ndarray
    pair_x: np.ndarray  # distinct (x, t) pairs over t in {t_x} and {T}
    pair_t: np.ndarray
    g_rec: np.ndarray  # per group: index of its (x, t_x) and (x, T) pair
    g_age: np.ndarray
    g_w: np.ndarray

    @classmethod
    def build(cls, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, w: np.ndarray) -> _Terms:
        m = len(x)
        xs, xi = factorize(x)
        ts, ti = factorize(np.r_[tx, big_t])
        keys, inverse = np.unique(np.r_[xi, xi] * len(ts) + ti, return_inverse=True)
        return cls(
            n=float(w.sum()),
            xs=xs,
            wx=np.bincount(xi, weights=w, minlength=len(xs)),
            pair_x=xs[keys // len(ts)],
            pair_t=ts[keys % len(ts)],
            g_rec=inverse[:m],
            g_age=inverse[m:],
            g_w=w,
        )

    def mean_loglik(self, theta: np.ndarray) -> float:
        r, alpha, s, beta = theta
        ll = wsum(self.wx, gammaln(r + self.xs) - gammaln(r)) + self.n * (
            r * np.log(alpha) + s * np.log(beta))
        lf = _log_f(theta, self.pair_x, self.pair_t)
        dead = _dead(theta, lf[self.g_rec], lf[self.g_age])
        alive = _log_alive_term(theta, self.pair_x, self.pair_t)[self.g_age]
        return (ll + wsum(self.g_w, np.logaddexp(alive, dead))) / self.n

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood and its central-difference gradient in theta."""
        f = -self.mean_loglik(theta)
        grad = np.empty(4)
        for i in range(4):
            up, down = theta.copy(), theta.copy()
            up[i] *= np.exp(_FD_STEP)
            down[i] *= np.exp(-_FD_STEP)
            grad[i] = (self.mean_loglik(down) - self.mean_loglik(up)) / (2 * _FD_STEP)
        return f, grad / theta  # d/dlog(theta) -> d/dtheta (the base class multiplies back)


class ParetoNBDModel(BaseModel):
    """Pareto/NBD model: P(alive) and expected purchases from (frequency, recency, T).

    Time may be in any unit (days here, weeks in the papers); alpha and beta are in that unit.
    Fitted parameters: `params_` = {r, alpha, s, beta}. The gradient is a central finite
    difference (the parameter derivatives of 2F1 have no closed form), so a fit costs nine
    likelihood evaluations per step; the hypergeometric runs once per distinct (x, t). That
    gradient is accurate to ~1e-9, hence the default `tol` of 1e-8 (1e-10 for the models with
    analytic gradients).

    Examples
    --------
    The published CDNOW parameters (weeks), for a customer with 2 repeat purchases, the last at
    week 30.43 of 38.86:

    >>> published = ParetoNBDModel.from_params({"r": 0.553, "alpha": 10.578, "s": 0.606,
    ...                                         "beta": 11.669})
    >>> published.expected_purchases(39, [2], [30.43], [38.86]).round(3).tolist()
    [1.455]
    >>> published.p_alive([2, 2], [30.43, 5.0], [38.86, 38.86]).round(2).tolist()
    [0.87, 0.13]

    Fitting customers drawn from that model:

    >>> import numpy as np
    >>> T = np.full(2000, 39.0)
    >>> frequency, recency = published.sample(T, seed=1)
    >>> ParetoNBDModel().fit(frequency, recency, T).converged_
    True
    """

    _param_names = ("r", "alpha", "s", "beta")

    def __init__(
        self,
        *,
        penalizer: float = 0.0,
        tol: float = 1e-8,
        max_iter: int = 1000,
        initial_params: dict[str, float] | None = None,
        group: bool = True,
        max_param: float = float(np.exp(25.0)),
    ) -> None:
        super().__init__(penalizer=penalizer, tol=tol, max_iter=max_iter,
                         initial_params=initial_params, group=group, max_param=max_param)

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike,
            weights: ArrayLike | None = None) -> ParetoNBDModel:
        """Maximum-likelihood fit; `weights` optionally counts customers per row."""
        x, tx, big_t, w = self._rfm_rows(frequency, recency, T, weights)
        terms = _Terms.build(x, tx, big_t, w)
        mean_x = wsum(w, x) / terms.n
        mean_t = max(wsum(w, big_t) / terms.n, 1e-6)
        start = self._start({"r": 1.0, "alpha": mean_t / max(mean_x, 0.1),
                             "s": 1.0, "beta": mean_t})
        self._fit_mle(terms.objective, start, terms.n, len(x))
        return self

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike,
                       T: ArrayLike) -> np.ndarray:
        """Per-customer log-likelihood of (x, t_x, T) under the fitted parameters."""
        theta = np.array(self._theta())
        r, alpha, s, beta = theta
        x, tx, big_t = check_rfm(frequency, recency, T)
        head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
        return head + np.logaddexp(_log_alive_term(theta, x, big_t),
                                   _log_dead_term(theta, x, tx, big_t))

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """P(still alive at T | x, t_x, T) (Fader & Hardie's note, eq. 36)."""
        self._check_fitted()
        x, tx, big_t = check_rfm(frequency, recency, T)
        return self._p_alive(x, tx, big_t)

    def expected_purchases(self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike,
                           T: ArrayLike) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T] (note eq. 41), t scalar or per customer.

        P(alive) * (r+x)(beta+T) / ((alpha+T)(s-1)) * [1 - ((beta+T)/(beta+T+t))^(s-1)].
        """
        r, alpha, s, beta = self._theta()
        x, tx, big_t = check_rfm(frequency, recency, T)
        h = check_horizon(t, len(x))
        rate = (r + x) / (alpha + big_t)
        return self._p_alive(x, tx, big_t) * rate * _lifetime_integral(s, beta + big_t, h)

    def expected_purchases_new(self, t: ArrayLike) -> np.ndarray:
        """E[X(t)] for a customer who just made a first purchase: r beta/(alpha(s-1)) [...]."""
        r, alpha, s, beta = self._theta()
        h = check_horizon(t)
        return r / alpha * _lifetime_integral(s, np.full_like(h, beta), h)

    def sample(self, T: ArrayLike, seed: int | np.random.Generator | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Draw (frequency, recency) for customers observed for T each, from the fitted model.

        lambda ~ Gamma(r, alpha), mu ~ Gamma(s, beta), lifetime ~ Exp(mu); over the observed
        active span L = min(lifetime, T): x ~ Poisson(lambda L), t_x = L * U^(1/x).
        """
        r, alpha, s, beta = self._theta()
        big_t = check_durations(T, "T")
        rng = np.random.default_rng(seed)
        n = len(big_t)
        lam = rng.gamma(r, 1.0 / alpha, n)
        mu = rng.gamma(s, 1.0 / beta, n)
        span = np.minimum(rng.exponential(1.0, n) / mu, big_t)
        x = rng.poisson(lam * span)
        rec = np.zeros(n)
        pos = x > 0
        rec[pos] = span[pos] * rng.beta(x[pos], 1.0)
        return x.astype(np.float64), rec

    def _p_alive(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """P(alive) per customer, computed once per distinct (x, t_x, T), its 2F1 terms once
        per distinct (x, t): customers share them (whole days, small counts), and 2F1 is the
        cost."""
        theta = np.array(self._theta())
        x, tx, big_t = np.broadcast_arrays(x, tx, big_t)
        (x, tx, big_t), inverse = distinct_rows(x, tx, big_t)
        # F once per distinct (x, t) over t_x and T
        (pair_x, pair_t), pair = distinct_rows(np.r_[x, x], np.r_[tx, big_t])
        lf = _log_f(theta, pair_x, pair_t)
        dead = _dead(theta, lf[pair[:len(x)]], lf[pair[len(x):]])
        return expit(-(dead - _log_alive_term(theta, x, big_t)))[inverse]


def _lifetime_integral(s: float, scale: np.ndarray, h: np.ndarray) -> np.ndarray:
    """scale/(s-1) [1 - (scale/(scale+h))^(s-1)] = int_0^h (scale/(scale+u))^s du.

    The expected alive time in the next h for lifetime rate mu ~ Gamma(s, scale); computed with
    expm1/log1p so that s near 1 (where it tends to scale ln(1 + h/scale)) stays accurate.
    """
    log_ratio = np.log1p(h / scale)
    k = s - 1.0
    if abs(k) < 1e-10:
        return scale * log_ratio
    return scale * -np.expm1(-k * log_ratio) / k

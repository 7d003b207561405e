"""BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way").

While alive a customer buys at Poisson rate lambda ~ Gamma(r, rate alpha) and, after each repeat
purchase, drops out with probability p ~ Beta(a, b). From (x, t_x, T) = (repeat purchases,
time of the last one, time observed), all measured from the first purchase, the model gives
P(alive) and the expected number of purchases in any horizon.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.integrate import IntegrationWarning, quad
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1

from training.models.btyd.base import (
    ArrayLike,
    BaseModel,
    check_durations,
    check_horizon,
    check_rfm,
    factorize,
    wsum,
)


@dataclass(frozen=True)
class _Terms:
    """The likelihood's inputs factorised by what each term depends on.

    The log-likelihood of a customer is f(x) - (r + x) ln(alpha + T) + [x > 0] softplus(d) with
    d = ln a - ln(b + x - 1) + (r + x) (ln(alpha + T) - ln(alpha + t_x)). So the special functions
    run once per distinct x, the logs once per distinct T and t_x, and only the softplus once per
    distinct (x, t_x, T) with x > 0.
    """

    n: float
    xs: np.ndarray  # distinct x
    wx: np.ndarray  # customers per distinct x
    ts_all: np.ndarray  # distinct T
    w_t: np.ndarray  # customers per distinct T
    wx_t: np.ndarray  # sum of x per distinct T
    rec: np.ndarray  # distinct t_x among repeat customers
    g_x: np.ndarray  # repeat groups: x (float), and codes into xs, ts_all, rec
    g_xi: np.ndarray
    g_ti: np.ndarray
    g_ri: np.ndarray
    g_w: np.ndarray
    _scratch: list[np.ndarray] = field(default_factory=list, repr=False)

    @classmethod
    def build(cls, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, w: np.ndarray) -> _Terms:
        xs, xi = factorize(x)
        ts_all, ti = factorize(big_t)
        rep = x > 0
        rec, ri = factorize(tx[rep])
        return cls(
            n=float(w.sum()),
            xs=xs,
            wx=np.bincount(xi, weights=w, minlength=len(xs)),
            ts_all=ts_all,
            w_t=np.bincount(ti, weights=w, minlength=len(ts_all)),
            wx_t=np.bincount(ti, weights=w * x, minlength=len(ts_all)),
            rec=rec,
            g_x=x[rep],
            g_xi=xi[rep],
            g_ti=ti[rep],
            g_ri=ri,
            g_w=w[rep],
        )

    def _buffers(self) -> list[np.ndarray]:
        if not self._scratch:
            self._scratch.extend(np.empty(len(self.g_x)) for _ in range(6))
        return self._scratch

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood per customer and its gradient in (r, alpha, a, b)."""
        r, alpha, a, b = theta
        xs, wx, n = self.xs, self.wx, self.n
        ll_x = (gammaln(r + xs) - gammaln(r) + gammaln(b + xs) - gammaln(b)
                + gammaln(a + b) - gammaln(a + b + xs))
        log_t = np.log(alpha + self.ts_all)
        inv_t = 1.0 / (alpha + self.ts_all)
        coef_t = r * self.w_t + self.wx_t
        ll = wsum(wx, ll_x) + n * r * np.log(alpha) - wsum(coef_t, log_t)

        # Repeat customers: softplus(d) and its derivative sigmoid(d) from one exp and one log1p,
        # in preallocated buffers (this loop over the distinct rows is the cost of a fit).
        diff, rx, d, e, tmp, pos = self._buffers()
        np.take(log_t, self.g_ti, out=diff)
        diff -= np.take(np.log(alpha + self.rec), self.g_ri, out=tmp)
        np.add(self.g_x, r, out=rx)
        inv_b = 1.0 / (b + np.maximum(xs, 1.0) - 1.0)
        np.take(np.log(a) + np.log(inv_b), self.g_xi, out=d)
        d += np.multiply(rx, diff, out=tmp)
        np.abs(d, out=e)
        np.exp(np.negative(e, out=e), out=e)
        np.log1p(e, out=tmp)
        tmp += np.maximum(d, 0.0, out=pos)
        ll += wsum(self.g_w, tmp)
        # pi = weight * sigmoid(d): the posterior weight of "dropped out right after t_x"
        pi = np.divide(self.g_w, np.add(e, 1.0, out=tmp), out=tmp)
        np.multiply(pi, e, out=pi, where=d < 0.0)

        psi_ab = digamma(a + b)
        psi_abx = digamma(a + b + xs)
        d_inv = np.take(inv_t, self.g_ti, out=d)
        d_inv -= np.take(1.0 / (alpha + self.rec), self.g_ri, out=e)
        grad = np.array([
            wsum(wx, digamma(r + xs) - digamma(r)) + n * np.log(alpha) - wsum(self.w_t, log_t)
            + wsum(pi, diff),
            n * r / alpha - wsum(coef_t, inv_t) + wsum(pi, np.multiply(rx, d_inv, out=d_inv)),
            wsum(wx, psi_ab - psi_abx) + pi.sum() / a,
            wsum(wx, digamma(b + xs) - digamma(b) + psi_ab - psi_abx)
            - wsum(pi, np.take(inv_b, self.g_xi, out=e)),
        ])
        return -ll / n, -grad / n


class BetaGeoModel(BaseModel):
    """BG/NBD model: P(alive) and expected purchases from (frequency, recency, T).

    Time may be in any unit (days in this project, weeks in the paper); alpha is in that unit
    and horizons `t` must use it too. Fitted parameters: `params_` = {r, alpha, a, b}.

    Examples
    --------
    The paper's CDNOW parameters (weeks): a customer with 2 repeat purchases, the last at week
    30.43 of 38.86, is expected to buy 1.226 times in the next 39 weeks.

    >>> published = BetaGeoModel.from_params({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
    >>> published.expected_purchases(39, [2], [30.43], [38.86]).round(3).tolist()
    [1.226]
    >>> published.p_alive([2, 2], [30.43, 5.0], [38.86, 38.86]).round(2).tolist()
    [0.73, 0.12]

    Fitting customers drawn from that model:

    >>> import numpy as np
    >>> T = np.full(2000, 39.0)
    >>> frequency, recency = published.sample(T, seed=1)
    >>> BetaGeoModel().fit(frequency, recency, T).converged_
    True
    """

    _param_names = ("r", "alpha", "a", "b")

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike,
            weights: ArrayLike | None = None) -> BetaGeoModel:
        """Maximum-likelihood fit; `weights` optionally counts customers per row."""
        x, tx, big_t, w = self._rfm_rows(frequency, recency, T, weights)
        terms = _Terms.build(x, tx, big_t, w)
        mean_x = wsum(w, x) / terms.n
        mean_t = wsum(w, big_t) / terms.n
        start = self._start({"r": 1.0, "alpha": max(mean_t, 1e-6) / max(mean_x, 0.1),
                             "a": 1.0, "b": 1.0})
        self._fit_mle(terms.objective, start, terms.n, len(x))
        return self

    def log_likelihood(self, frequency: ArrayLike, recency: ArrayLike,
                       T: ArrayLike) -> np.ndarray:
        """Per-customer log-likelihood of (x, t_x, T) under the fitted parameters."""
        r, alpha, a, b = self._theta()
        x, tx, big_t = check_rfm(frequency, recency, T)
        ll = (gammaln(r + x) - gammaln(r) + r * np.log(alpha)
              + gammaln(b + x) + gammaln(a + b) - gammaln(b) - gammaln(a + b + x)
              - (r + x) * np.log(alpha + big_t))
        return ll + np.where(x > 0, np.logaddexp(0.0, self._log_odds_dead(x, tx, big_t)), 0.0)

    def p_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
        """P(still alive at T | x, t_x, T); 1 for x = 0 (dropout only follows a purchase)."""
        self._check_fitted()
        x, tx, big_t = check_rfm(frequency, recency, T)
        return self._p_alive(x, tx, big_t)

    def expected_purchases(self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike,
                           T: ArrayLike) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T] (FHL 2005 eq. 10), t scalar or per customer."""
        self._check_fitted()
        x, tx, big_t = check_rfm(frequency, recency, T)
        h = check_horizon(t, len(x))
        return self._alive_mean(h, x, big_t) * self._p_alive(x, tx, big_t)

    def expected_purchases_new(self, t: ArrayLike) -> np.ndarray:
        """E[X(t)]: expected repeat purchases in (0, t] of a customer who just made a first one."""
        self._check_fitted()
        h = check_horizon(t)
        zero = np.zeros_like(h)
        return self._alive_mean(h, zero, zero)

    def sample(self, T: ArrayLike, seed: int | np.random.Generator | None = None,
               ) -> tuple[np.ndarray, np.ndarray]:
        """Draw (frequency, recency) for customers observed for T each, from the fitted model.

        Repeat purchases are Poisson(lambda) events; the customer dies at the N-th of them with
        N ~ Geometric(p). With K ~ Poisson(lambda T) events in [0, T], x = min(K, N) and the
        x-th event time is T * Beta(x, K - x + 1) (an order statistic of K uniforms).
        """
        r, alpha, a, b = self._theta()
        big_t = check_durations(T, "T")
        rng = np.random.default_rng(seed)
        n = len(big_t)
        lam = rng.gamma(r, 1.0 / alpha, n)
        p = np.clip(rng.beta(a, b, n), 1e-12, 1.0)
        k = rng.poisson(lam * big_t)
        x = np.minimum(k, rng.geometric(p))
        rec = np.zeros(n)
        pos = x > 0
        rec[pos] = big_t[pos] * rng.beta(x[pos], k[pos] - x[pos] + 1)
        return x.astype(np.float64), rec

    # -- formulas ------------------------------------------------------------------------

    def _log_odds_dead(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """ln P(dead)/P(alive) for x > 0: ln(a/(b+x-1)) + (r+x) ln((alpha+T)/(alpha+t_x))."""
        r, alpha, a, b = self._theta()
        return (np.log(a) - np.log(b + np.maximum(x, 1.0) - 1.0)
                + (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx)))

    def _p_alive(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        return np.where(x > 0, expit(-self._log_odds_dead(x, tx, big_t)), 1.0)

    def _alive_mean(self, h: np.ndarray, x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
        """E[purchases in the next h | alive at T, x]: the numerator of FHL 2005 eq. 10.

        Closed form where it is reliable (see `_alive_mean_closed`); at a = 1, where it is
        0/0, the mean of a = 1 +- 1e-5 (error ~1e-10); rows where it fails (a + b + x <= 1,
        or a hypergeometric that does not converge numerically) by quadrature over p.
        """
        r, alpha, a, b = self._theta()
        h, x, big_t = np.broadcast_arrays(h, x, big_t)
        if abs(a - 1.0) < 1e-6:
            out = 0.5 * (_alive_mean_closed(r, alpha, 1.0 + 1e-5, b, h, x, big_t)
                         + _alive_mean_closed(r, alpha, 1.0 - 1e-5, b, h, x, big_t))
        else:
            out = _alive_mean_closed(r, alpha, a, b, h, x, big_t)
        bad = ~np.isfinite(out) | (a + b + x - 1.0 <= 0.0)
        for i in np.flatnonzero(bad):
            out[i] = _alive_mean_quad(r, alpha, a, b, h[i], x[i], big_t[i])
        return out


def _alive_mean_closed(r: float, alpha: float, a: float, b: float, h: np.ndarray,
                       x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """(a+b+x-1)/(a-1) [1 - ((alpha+T)/(alpha+T+h))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)].

    With z = h/(alpha+T+h), Euler's transformation turns the bracketed product into
    (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose series converges at z = 1 (no overflow for
    long horizons) and whose -expm1 keeps precision for small h. NaN where the 2F1 is not
    positive and finite (the caller falls back to quadrature).
    """
    c = a + b + x - 1.0
    log1m_z = np.log(alpha + big_t) - np.log(alpha + big_t + h)
    z = -np.expm1(log1m_z)
    hyp = hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_term = (a - 1.0) * log1m_z + np.log(np.where(hyp > 0, hyp, np.nan))
    return c * -np.expm1(log_term) / (a - 1.0)


def _alive_mean_quad(r: float, alpha: float, a: float, b: float, h: float, x: float,
                     big_t: float) -> float:
    """The same mean as a 1-D integral over the posterior p ~ Beta(a, b + x).

    Given p, lambda ~ Gamma(r + x, alpha + T) and dropout after each purchase, the expected
    count in h is (1 - (1 + p h/(alpha+T))^-(r+x)) / p. The Beta density is evaluated in log
    space (it underflows for large x) and the interval is split around its mean.
    """
    u, k, log_beta = h / (alpha + big_t), r + x, betaln(a, b + x)

    def integrand(p: float) -> float:
        density = np.exp((a - 1.0) * np.log(p) + (b + x - 1.0) * np.log1p(-p) - log_beta)
        return density * -np.expm1(-k * np.log1p(p * u)) / p

    mean = a / (a + b + x)
    points = sorted({mean / 100.0, mean / 10.0, mean, min(0.999, 10.0 * mean)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)
        val, _ = quad(integrand, 0.0, 1.0, points=points, epsabs=0.0, epsrel=1e-11, limit=500)
    return float(val)

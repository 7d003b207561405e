"""Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"; Fader & Hardie note 025).

A customer's transaction values are Gamma(p, rate nu) with customer-level nu ~ Gamma(q, rate
gamma), independent of the purchase process. From x repeat transactions with average value m,
the posterior of nu is Gamma(p x + q, rate gamma + x m), which gives the expected spend per
purchase and its uncertainty (p / nu is the customer's mean spend per purchase).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammainccinv, gammaln

from training.models.btyd.base import (
    ArrayLike,
    BaseModel,
    as_vector,
    check_integer,
    check_lengths,
    check_nonnegative,
    check_weights,
    group_rows,
    wsum,
)


def _check_spend(frequency: ArrayLike, monetary_value: ArrayLike, *,
                 fitting: bool) -> tuple[np.ndarray, np.ndarray]:
    x = as_vector(frequency, "frequency")
    m = as_vector(monetary_value, "monetary_value")
    check_lengths(("frequency", x), ("monetary_value", m))
    check_nonnegative(x, "frequency")
    check_integer(x, "frequency")
    check_nonnegative(m, "monetary_value")
    if fitting:
        zero = x == 0
        if zero.any():
            raise ValueError(
                f"frequency: {int(zero.sum())} customers have frequency 0 (first at position "
                f"{int(np.argmax(zero))}); Gamma-Gamma is fitted on repeat customers only, "
                "select frequency > 0 first"
            )
        bad = m == 0
        if bad.any():
            raise ValueError(
                f"monetary_value: {int(bad.sum())} values are 0 (first at position "
                f"{int(np.argmax(bad))}); Gamma-Gamma needs a positive average spend to fit"
            )
    return x, m


@dataclass(frozen=True)
class _Terms:
    """Distinct (x, m) rows with sums that do not depend on the parameters."""

    n: float
    x: np.ndarray
    total: np.ndarray  # x * m, the repeat spend
    w: np.ndarray
    sum_log_m: float  # sum w ln m
    sum_x_log_xm: float  # sum w x ln(x m)

    @classmethod
    def build(cls, x: np.ndarray, m: np.ndarray, w: np.ndarray) -> _Terms:
        return cls(n=float(w.sum()), x=x, total=x * m, w=w,
                   sum_log_m=wsum(w, np.log(m)), sum_x_log_xm=wsum(w, x * np.log(x * m)))

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Mean negative log-likelihood per customer and its gradient in (p, q, gamma).

        ln f(m | x) = lnG(px+q) - lnG(px) - lnG(q) + q ln gamma + (px-1) ln m + px ln x
                      - (px+q) ln(gamma + x m).
        """
        p, q, gam = theta
        x, w, n = self.x, self.w, self.n
        px = p * x
        log_rate = np.log(gam + self.total)
        ll = (wsum(w, gammaln(px + q) - gammaln(px) - (px + q) * log_rate)
              + n * (q * np.log(gam) - gammaln(q)) + p * self.sum_x_log_xm - self.sum_log_m)
        psi = digamma(px + q)
        grad = np.array([
            wsum(w, x * (psi - digamma(px) - log_rate)) + self.sum_x_log_xm,
            wsum(w, psi - log_rate) + n * (np.log(gam) - digamma(q)),
            n * q / gam - wsum(w, (px + q) / (gam + self.total)),
        ])
        return -ll / n, -grad / n


class GammaGammaModel(BaseModel):
    """Gamma-Gamma model of spend per purchase; `params_` = {p, q, gamma}.

    Fit on repeat customers (frequency > 0) with `monetary_value` the average value of their
    repeat transactions (the BTYD summary's convention). Predictions accept frequency 0 (the
    population mean p gamma / (q - 1)).

    Examples
    --------
    The published CDNOW parameters: the expected spend per purchase moves from the population
    mean (frequency 0) towards a customer's own average as their purchases add up.

    >>> published = GammaGammaModel.from_params({"p": 6.25, "q": 3.74, "gamma": 15.44})
    >>> published.expected_spend([0, 1, 10], [0.0, 20.0, 20.0]).round(2).tolist()
    [35.22, 24.64, 20.64]

    Fitting customers whose transaction values follow the model:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> frequency = rng.integers(1, 10, 1000)
    >>> nu = rng.gamma(3.74, 1 / 15.44, 1000)
    >>> average = rng.gamma(6.25 * frequency, 1 / nu) / frequency
    >>> GammaGammaModel().fit(frequency, average).converged_
    True
    """

    _param_names = ("p", "q", "gamma")

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike,
            weights: ArrayLike | None = None) -> GammaGammaModel:
        """Maximum-likelihood fit on repeat customers; `weights` optionally counts customers."""
        self._check_hyper()
        x, m = _check_spend(frequency, monetary_value, fitting=True)
        w = check_weights(weights, len(x))
        if self.group:
            (x, m), w = group_rows([x, m], w)
        elif w is None:
            w = np.ones_like(x)
        terms = _Terms.build(x, m, w)
        mean_m = wsum(w, m) / terms.n
        self._fit_mle(terms.objective, self._start({"p": 1.0, "q": 2.0, "gamma": mean_m}),
                      terms.n, len(x))
        return self

    def log_likelihood(self, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
        """Per-customer log-density of the average spend m given x (repeat customers only)."""
        p, q, gam = self._theta()
        x, m = _check_spend(frequency, monetary_value, fitting=True)
        px = p * x
        return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gam)
                + (px - 1.0) * np.log(m) + px * np.log(x) - (px + q) * np.log(gam + x * m))

    def expected_spend(self, frequency: ArrayLike, monetary_value: ArrayLike) -> np.ndarray:
        """E[spend per purchase | x, m] = p (gamma + x m) / (p x + q - 1).

        A weighted average of the population mean p gamma / (q - 1) and the observed m, with
        weight p x / (p x + q - 1) on m. Infinite where p x + q <= 1 (no finite mean).
        """
        p, q, gam = self._theta()
        x, m = _check_spend(frequency, monetary_value, fitting=False)
        shape = p * x + q - 1.0
        with np.errstate(divide="ignore"):
            return np.where(shape > 0, p * (gam + x * m) / np.maximum(shape, 1e-300), np.inf)

    def spend_quantiles(self, frequency: ArrayLike, monetary_value: ArrayLike,
                        qs: Sequence[float] = (0.1, 0.5, 0.9)) -> np.ndarray:
        """Quantiles of the customer's mean spend per purchase p / nu given (x, m).

        nu | x, m ~ Gamma(p x + q, rate gamma + x m), so the level-k quantile of p / nu is
        p (gamma + x m) / G^-1(1 - k) with G the Gamma(p x + q, 1) distribution. Returns an
        array (n_customers, len(qs)); parameter uncertainty is not included.
        """
        p, q, gam = self._theta()
        x, m = _check_spend(frequency, monetary_value, fitting=False)
        levels = as_vector(qs, "qs")
        if np.any((levels <= 0) | (levels >= 1)):
            raise ValueError(f"qs: quantile levels must be in (0, 1), got {levels.tolist()}")
        shape = (p * x + q)[:, None]
        # gammainccinv(a, k) is the point with upper tail k, i.e. the (1 - k) quantile of nu.
        nu_q = gammainccinv(shape, levels[None, :])
        return p * (gam + x * m)[:, None] / nu_q

"""Diagnostic plots of fitted BG/NBD and Pareto/NBD models, as lifetimes and pymc-marketing draw
them: the frequency/recency matrices of expected purchases and P(alive), and the period
transactions check (actual vs model-simulated customers by number of repeat purchases).

The maths stays in the models: these functions only call `expected_purchases`, `p_alive` and
`sample`. Each draws on `ax` when given, else on a new figure built without pyplot (nothing
global is touched; `ax.figure.savefig("x.png")` renders it), and returns the Axes.

Time arguments follow the models' own names: `T` is how long customers have been observed
(their age), `t` a forecast horizon (lifetimes calls it `T` in these plots), both in the unit
the model was fitted in (`unit`, days in this project).

Examples
--------
>>> from training.models import BetaGeoModel
>>> bg = BetaGeoModel.from_params({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
>>> ax = plot_probability_alive_matrix(bg, T=52, max_frequency=20, unit="weeks")
>>> ax.get_xlabel()
'frequency (repeat purchases)'
>>> f, r = bg.sample([52.0] * 500, seed=1)
>>> ax = plot_period_transactions(bg, f, r, [52.0] * 500)
>>> [t.get_text() for t in ax.get_xticklabels()][-1]
'7+'
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.utils.validation import check_is_fitted

from training.models.btyd import BetaGeoModel, ParetoNBDModel
from training.models.btyd.base import ArrayLike, check_rfm

CountModel = BetaGeoModel | ParetoNBDModel

FIGSIZE = (6.0, 4.5)
DPI = 100
ACTUAL = "black"
_NAMES = {BetaGeoModel: "BG/NBD", ParetoNBDModel: "Pareto/NBD"}
_MAX_ROWS = 200  # recency values drawn in a matrix (one per unit of time up to this many)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained").subplots()


def _check_model(model: CountModel) -> str:
    """The model's display name; TypeError for other models, NotFittedError before `fit`."""
    if not isinstance(model, CountModel):
        raise TypeError(f"model: expected a BetaGeoModel or ParetoNBDModel, got "
                        f"{type(model).__name__}")
    check_is_fitted(model, "params_")
    return _NAMES[type(model)]


def _grid(model: CountModel, T: float, max_frequency: int | None,
          max_recency: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frequencies 0..max_frequency, recencies 0..max_recency, and the (recency x frequency)
    grid of both. A customer with no repeat purchase has recency 0 by definition, so the
    frequency-0 column holds that one customer on every row."""
    if not T > 0:
        raise ValueError(f"T: must be > 0, got {T}")
    max_recency = T if max_recency is None else float(max_recency)
    if not 0 < max_recency <= T:
        raise ValueError(f"max_recency: must be in (0, T={T:g}], got {max_recency:g}")
    if max_frequency is None:
        # The range the fitted model gives customers of this age: its 99th percentile.
        simulated, _ = model.sample(np.full(2000, float(T)), seed=0)
        max_frequency = max(int(np.percentile(simulated, 99)), 1)
    if int(max_frequency) < 1:
        raise ValueError(f"max_frequency: must be >= 1, got {max_frequency}")
    frequency = np.arange(int(max_frequency) + 1, dtype=np.float64)
    recency = np.linspace(0.0, max_recency, min(int(max_recency) + 1, _MAX_ROWS))
    ff, rr = np.meshgrid(frequency, recency)
    rr = np.where(ff == 0, 0.0, rr)
    return frequency, recency, ff, rr


def _matrix(ax: Axes, z: np.ndarray, frequency: np.ndarray, recency: np.ndarray,
            bar_label: str, unit: str, **imshow: object) -> Axes:
    """Draw `z` (recency rows x frequency columns) with recency growing upwards."""
    half = (recency[1] - recency[0]) / 2 if len(recency) > 1 else 0.5
    image = ax.imshow(z, origin="lower", aspect="auto", interpolation="nearest",
                      extent=(-0.5, frequency[-1] + 0.5, -half, recency[-1] + half), **imshow)
    ax.figure.colorbar(image, ax=ax, label=bar_label)
    ax.set(xlabel="frequency (repeat purchases)",
           ylabel=f"recency ({unit} from first to last purchase)")
    return ax


def plot_frequency_recency_matrix(
    model: CountModel,
    *,
    T: float,
    t: float = 1.0,
    max_frequency: int | None = None,
    max_recency: float | None = None,
    unit: str = "days",
    ax: Axes | None = None,
) -> Axes:
    """Expected purchases in the next `t` of a customer observed for `T`, for each frequency
    (x) and recency (y): lifetimes' `plot_frequency_recency_matrix`.

    The best customers sit top right (many purchases, the last one recent). `max_frequency`
    None: the 99th percentile of what the model simulates for customers of age `T`;
    `max_recency` None: `T`.
    """
    name = _check_model(model)
    if not t > 0:
        raise ValueError(f"t: must be > 0, got {t}")
    frequency, recency, ff, rr = _grid(model, T, max_frequency, max_recency)
    z = model.expected_purchases(t, ff.ravel(), rr.ravel(), np.full(ff.size, float(T)))
    ax = _axes(ax)
    _matrix(ax, z.reshape(ff.shape), frequency, recency,
            f"expected purchases in the next {t:g} {unit}", unit, cmap="viridis")
    ax.set_title(f"{name}: expected purchases in the next {t:g} {unit}\n"
                 f"customers observed for {T:g} {unit}; best top right")
    return ax


def plot_probability_alive_matrix(
    model: CountModel,
    *,
    T: float,
    max_frequency: int | None = None,
    max_recency: float | None = None,
    unit: str = "days",
    ax: Axes | None = None,
) -> Axes:
    """P(alive) of a customer observed for `T`, for each frequency (x) and recency (y):
    lifetimes' `plot_probability_alive_matrix`.

    Frequent buyers gone quiet (bottom right) are the likeliest lost; under BG/NBD a customer
    without a repeat purchase (frequency 0) is alive by assumption. Defaults as
    `plot_frequency_recency_matrix`.
    """
    name = _check_model(model)
    frequency, recency, ff, rr = _grid(model, T, max_frequency, max_recency)
    z = model.p_alive(ff.ravel(), rr.ravel(), np.full(ff.size, float(T)))
    ax = _axes(ax)
    _matrix(ax, z.reshape(ff.shape), frequency, recency, "P(alive)", unit, cmap="viridis",
            vmin=0.0, vmax=1.0)
    ax.set_title(f"{name}: probability the customer is still active\n"
                 f"customers observed for {T:g} {unit}; lost ones bottom right")
    return ax


def plot_period_transactions(
    model: CountModel,
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    max_frequency: int = 7,
    draws: int = 10,
    seed: int = 0,
    color: str = "C0",
    ax: Axes | None = None,
) -> Axes:
    """Customers by number of repeat purchases in the calibration period: actual (black) vs
    the fitted model (lifetimes' `plot_period_transactions`).

    The model's counts are simulated with `model.sample` for customers of the same ages `T`,
    `draws` times (averaged, seeded by `seed`); bars that match mean the model reproduces the
    data it was fitted on. The last group counts `max_frequency` or more.
    """
    name = _check_model(model)
    x, _, big_t = check_rfm(frequency, recency, T)
    if int(max_frequency) < 1:
        raise ValueError(f"max_frequency: must be >= 1, got {max_frequency}")
    if int(draws) < 1:
        raise ValueError(f"draws: must be >= 1, got {draws}")
    simulated, _ = model.sample(np.tile(big_t, int(draws)), seed=seed)
    cap = int(max_frequency)
    actual = np.bincount(np.minimum(x, cap).astype(int), minlength=cap + 1)
    expected = np.bincount(np.minimum(simulated, cap).astype(int), minlength=cap + 1) / draws
    ax = _axes(ax)
    pos = np.arange(cap + 1)
    ax.bar(pos - 0.2, actual, width=0.4, color=ACTUAL, label="actual")
    ax.bar(pos + 0.2, expected, width=0.4, color=color, label=f"{name} (simulated)")
    ax.set_xticks(pos, [str(i) for i in range(cap)] + [f"{cap}+"])
    ax.set(title=f"{name}: customers by repeat purchases\n"
                 f"actual vs model, {len(x):,} customers; equal bars = good fit",
           xlabel="repeat purchases in the calibration period", ylabel="customers")
    ax.legend(loc="upper right", fontsize="small")
    return ax

"""The plots: BTYD diagnostics of the model library, the run's charts and their shared colours,
and the figures a training run logs (what is drawn, never pixels)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from sklearn.exceptions import NotFittedError

from tests.test_training import synthetic_transactions
from training import evaluate as ev
from training import plots as pl
from training.candidates import OURS, Target, baseline_names
from training.models import BetaGeoModel, GammaGammaModel, ParetoNBDModel
from training.models import plots as mp
from training.report import CAPTIONS, figures
from training.train import TrainConfig, train

# Fader, Hardie & Lee (2005), CDNOW, time in weeks.
BG = BetaGeoModel.from_params({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
PNBD = ParetoNBDModel.from_params({"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669})


def _pair() -> tuple[Axes, Axes]:
    left, right = Figure().subplots(1, 2)
    return left, right


def _texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


# ------------------------------------------------------------------------- BTYD diagnostics


@pytest.mark.parametrize("model", [BG, PNBD], ids=["bg", "pnbd"])
def test_frequency_recency_matrix_holds_the_models_expectations(model):
    ax = mp.plot_frequency_recency_matrix(model, T=52, t=4, max_frequency=10, unit="weeks")
    (image,) = ax.images
    z = image.get_array()
    assert z.shape == (53, 11)  # recency 0..52 weeks (rows) x frequency 0..10
    want = model.expected_purchases(4, [10, 3], [52.0, 20.0], [52.0, 52.0])
    np.testing.assert_allclose([z[-1, -1], z[20, 3]], want)
    assert np.ptp(z[:, 0]) == 0  # no repeat purchase: recency 0 on every row
    assert "expected purchases in the next 4 weeks" in ax.get_title()
    assert image.colorbar.ax.get_ylabel() == "expected purchases in the next 4 weeks"
    assert ax.get_xlabel() == "frequency (repeat purchases)"
    assert "weeks" in ax.get_ylabel()


def test_probability_alive_matrix_is_p_alive_on_a_0_1_scale():
    left, right = _pair()
    ax = mp.plot_probability_alive_matrix(PNBD, T=52, max_frequency=8, max_recency=26,
                                          unit="weeks", ax=right)
    assert ax is right and not left.images
    z = ax.images[0].get_array()
    assert z.shape == (27, 9)
    np.testing.assert_allclose(z[-1, -1], PNBD.p_alive([8], [26.0], [52.0])[0])
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert ax.images[0].colorbar.ax.get_ylabel() == "P(alive)"
    assert ax.get_title().startswith("Pareto/NBD: probability the customer is still active")


def test_matrix_frequency_range_defaults_to_what_the_model_simulates():
    ax = mp.plot_probability_alive_matrix(BG, T=52)
    simulated, _ = BG.sample(np.full(2000, 52.0), seed=0)
    assert ax.images[0].get_array().shape[1] == int(np.percentile(simulated, 99)) + 1


def test_period_transactions_counts_customers_and_simulates_the_same_population():
    t = np.full(20_000, 52.0)
    f, r = BG.sample(t, seed=7)
    ax = mp.plot_period_transactions(BG, f, r, t, color="tab:green")
    actual, model = ax.containers
    assert len(ax.patches) == 16  # 0..6 and 7+, actual and model
    counts = np.bincount(np.minimum(f, 7).astype(int), minlength=8)
    np.testing.assert_array_equal([p.get_height() for p in actual], counts)
    heights = np.array([p.get_height() for p in model])
    assert heights.sum() == pytest.approx(len(t))
    # The data come from the model itself: its simulation matches them.
    np.testing.assert_allclose(heights, counts, rtol=0.06)
    assert to_rgba(model[0].get_facecolor()) == to_rgba("tab:green")
    assert to_rgba(actual[0].get_facecolor()) == to_rgba(mp.ACTUAL)
    assert [x.get_text() for x in ax.get_xticklabels()][-1] == "7+"
    assert ax.get_ylabel() == "customers" and "BG/NBD" in ax.get_title()
    again = mp.plot_period_transactions(BG, f, r, t, color="tab:green")
    np.testing.assert_array_equal([p.get_height() for p in again.containers[1]], heights)


def test_btyd_plots_check_their_inputs():
    with pytest.raises(NotFittedError):
        mp.plot_probability_alive_matrix(BetaGeoModel(), T=10, max_frequency=3)
    with pytest.raises(TypeError, match="BetaGeoModel or ParetoNBDModel"):
        mp.plot_frequency_recency_matrix(
            GammaGammaModel.from_params({"p": 6.0, "q": 3.7, "gamma": 15.0}), T=10)
    with pytest.raises(ValueError, match="max_recency"):
        mp.plot_frequency_recency_matrix(BG, T=10, max_recency=11, max_frequency=3)
    with pytest.raises(ValueError, match="recency"):
        mp.plot_period_transactions(BG, [1, 0], [5.0, 0.0], [4.0, 4.0])


# ---------------------------------------------------------------------------- run charts


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 400
    risk = rng.random(n)
    y = (rng.random(n) < 0.2 + 0.6 * risk).astype(int)
    spend = rng.gamma(0.7, 100, n)
    return {
        "y": y,
        "scores": {OURS: np.clip(0.2 + 0.6 * risk + rng.normal(0, 0.05, n), 0, 1),
                   "bg_nbd": np.clip(risk + rng.normal(0, 0.2, n), 0, 1)},
        "spend": spend,
        "deciles": {OURS: ev.decile_table(spend, spend + 10),
                    "bg_nbd_gg": ev.decile_table(spend, rng.random(n))},
    }


def test_every_model_has_one_colour_and_strangers_get_others():
    assert {OURS, *baseline_names(*Target)} <= set(pl.MODEL_COLORS)
    assert len(set(pl.MODEL_COLORS.values())) == len(pl.MODEL_COLORS)
    colors = pl.model_colors(["x", OURS, "y"])
    assert colors[OURS] == pl.MODEL_COLORS[OURS]
    assert colors["x"] != colors["y"]
    assert not {colors["x"], colors["y"]} & set(pl.MODEL_COLORS.values())


def test_ours_has_the_same_colour_in_every_chart(data):
    gain, lift = pl.lift_gain_plot(data["y"], data["scores"])
    reliability = pl.reliability_plot(data["y"], data["scores"])
    deciles = pl.decile_chart(data["deciles"])
    bars = pl.metrics_bar({OURS: {"churn.roc_auc": 0.8}, "bg_nbd": {"churn.roc_auc": 0.7}},
                          "churn.roc_auc")
    ours = to_rgba(pl.MODEL_COLORS[OURS])
    assert to_rgba(gain.lines[0].get_color(), 1.0) == ours
    assert to_rgba(lift.lines[0].get_color(), 1.0) == ours
    assert to_rgba(reliability.lines[1].get_color(), 1.0) == ours
    assert to_rgba(deciles.patches[0].get_facecolor(), 1.0) == ours
    assert to_rgba(bars.patches[0].get_facecolor()) == ours
    bg = to_rgba(pl.MODEL_COLORS["bg_nbd"])
    assert to_rgba(gain.lines[1].get_color()) == to_rgba(bars.patches[1].get_facecolor()) == bg
    # Ours lies beneath, wider: a baseline it serves stays visible on top of it.
    assert gain.lines[0].get_linewidth() > gain.lines[1].get_linewidth()
    assert gain.lines[0].get_zorder() < gain.lines[1].get_zorder()


def test_every_chart_draws_on_a_given_axes(data):
    left, right = _pair()
    assert pl.reliability_plot(data["y"], data["scores"], ax=right) is right
    assert pl.decile_chart(data["deciles"], ax=left) is left
    assert len(right.lines) == 3 and len(left.patches) == 20
    pair = _pair()
    assert pl.lift_gain_plot(data["y"], data["scores"], axes=pair) == pair
    idx = pd.RangeIndex(6)
    tables = {OURS: ev.tracking_table(pd.Series(np.ones(6), idx), pd.Series(np.ones(6), idx))}
    inc, cum = _pair()
    assert pl.tracking_plot(tables, xlabel="week", axes=(inc, cum)) == (inc, cum)
    assert cum.get_xlabel() == "week"
    single = Figure().subplots()
    assert pl.interval_plot([1.0, 2.0], [0, 1], [1, 2], [2, 3], ax=single) is single
    assert len(single.figure.axes) == 1


def test_reliability_plot_says_the_bin_size_and_the_note(data):
    ax = pl.reliability_plot(data["y"], data["scores"], note="pareto_nbd is 1 - P(alive)")
    assert "10 bins of ~40 customers each" in ax.get_title()
    assert "pareto_nbd is 1 - P(alive)" in _texts(ax)
    assert ax.get_xlabel() == "mean predicted churn probability in the bin"


def test_metric_bars_cut_the_axis_only_when_the_values_are_close():
    close = pl.metrics_bar({OURS: {"churn.roc_auc": 0.76}, "a": {"churn.roc_auc": 0.72},
                            "b": {"churn.roc_auc": 0.74}}, "churn.roc_auc")
    assert [p.get_height() for p in close.patches] == [0.76, 0.72, 0.74]  # bars from 0
    bottom, top = close.get_ylim()
    assert 0.6 < bottom < 0.72 < 0.76 < top
    assert any(t.startswith("y axis cut: starts at") for t in _texts(close))
    assert close.get_title() == "churn ROC-AUC by model (higher is better)"
    labels = [t for t in close.texts if t.get_text() in ("0.76", "0.72", "0.74")]
    assert [t.get_text() for t in labels if t.get_fontweight() == "bold"] == ["0.76"]

    apart = pl.metrics_bar({OURS: {"purchases.mae": 0.2}, "a": {"purchases.mae": 0.9}},
                           "purchases.mae")
    assert apart.get_ylim()[0] == 0
    assert not any("axis cut" in t for t in _texts(apart))
    assert apart.get_title() == "purchases MAE by model (lower is better)"
    bold = [t.get_text() for t in apart.texts if t.get_fontweight() == "bold"]
    assert bold == ["0.2"]


def test_interval_plot_labels_the_calibrated_interval_and_the_coverage_per_group():
    rng = np.random.default_rng(0)
    mid = rng.gamma(1.0, 50, 500)
    actual = mid * rng.lognormal(0, 0.5, 500)
    ax = pl.interval_plot(actual, mid * 0.5, mid, mid * 2, target=0.8, groups=5,
                          ylabel="spend in the next 90 days")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "interval (calibrated to hold 80%)"
    assert "P10" not in " ".join(legend) + ax.get_title()
    inside = (actual >= mid * 0.5) & (actual <= mid * 2)
    order = np.argsort(mid, kind="stable")
    want = [f"{inside[g].mean():.0%}" for g in np.array_split(order, 5)]
    assert _texts(ax) == want
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "4", "5"]
    assert f"{inside.mean():.1%} of actuals inside, target 80%" in ax.get_title()
    assert ax.get_ylabel().startswith("spend in the next 90 days")


# ---------------------------------------------------------------------- a run's figures


@pytest.fixture(scope="module")
def run_figures():
    tx = synthetic_transactions(800, seed=4)
    result = train(tx, TrainConfig(n_estimators=30), data_end=dt.date(2024, 1, 1))
    return figures(result)


def test_a_run_logs_every_captioned_figure(run_figures):
    assert list(run_figures) == list(CAPTIONS)
    assert all(isinstance(f, Figure) for f in run_figures.values())
    pairs = [run_figures[k] for k in CAPTIONS if k.startswith("btyd_")]
    assert all(len(f.axes) >= 2 for f in pairs)
    bg, pnbd = run_figures["btyd_period_transactions"].axes
    assert "BG/NBD" in bg.get_title() and "Pareto/NBD" in pnbd.get_title()


def test_a_runs_charts_share_the_model_colours(run_figures):
    gain = run_figures["churn_lift_gain"].axes[0]
    auc = run_figures["churn_roc_auc"].axes[0]
    names = [t.get_text() for t in auc.get_xticklabels()]
    for line in gain.lines[: len(names)]:
        name = line.get_label().split()[0]
        bar = auc.patches[names.index(name)]
        assert to_rgba(line.get_color(), 1.0) == to_rgba(bar.get_facecolor())
        assert to_rgba(bar.get_facecolor()) == to_rgba(pl.MODEL_COLORS[name])
    bg, pnbd = run_figures["btyd_period_transactions"].axes
    assert to_rgba(bg.containers[1][0].get_facecolor()) == to_rgba(pl.MODEL_COLORS["bg_nbd"])
    assert to_rgba(pnbd.containers[1][0].get_facecolor()) == to_rgba(
        pl.MODEL_COLORS["pareto_nbd"])

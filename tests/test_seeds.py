"""The value simulation draws each customer's futures from its own key: a customer's simulated
spend, CLV and intervals are the same alone, in any batch, chunk size or order, and the draws
still follow the BG/NBD + Gamma-Gamma process they simulate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from serving.batch import score_population
from serving.config import RiskBands
from training.components import Components, customer_keys
from training.models import BetaGeoModel, GammaGammaModel, ParetoNBDModel, clv, keyed_random
from training.registry import load_artifact

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_models"
BG = BetaGeoModel.from_params({"r": 0.8, "alpha": 40.0, "a": 0.6, "b": 2.5})
GG = GammaGammaModel.from_params({"p": 3.0, "q": 4.0, "gamma": 60.0})
PNBD = ParetoNBDModel.from_params({"r": 0.8, "alpha": 40.0, "s": 0.5, "beta": 60.0})
SIMULATED = ["spend_p10", "spend_p50", "spend_p90", "clv", "clv_p10", "clv_p50", "clv_p90",
             "value_at_risk"]


def population(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    big_t = rng.integers(30, 700, n).astype(float)
    freq = rng.poisson(3.0, n).astype(float)
    recency = np.where(freq > 0, np.floor(rng.random(n) * big_t), 0.0)
    return pd.DataFrame({
        "customer_id": [f"c{i:05d}" for i in range(n)], "as_of": "2024-01-01",
        "frequency": freq, "recency": recency, "T": big_t,
        "monetary_value": np.where(freq > 0, rng.gamma(3.0, 20.0, n), 0.0)})


def simulate(frame: pd.DataFrame, chunk: int = 50_000) -> list[np.ndarray]:
    return clv.simulate_spends(BG, GG, frame["frequency"], frame["recency"], frame["T"],
                               frame["monetary_value"], (90, 365), draws=64,
                               keys=customer_keys(frame), chunk=chunk)


POP = population(60, 1)
WHOLE = simulate(POP)


@settings(max_examples=25, deadline=None)
@given(picked=st.lists(st.integers(0, len(POP) - 1), min_size=1, max_size=30, unique=True),
       chunk=st.integers(1, 40))
def test_a_customers_draws_do_not_depend_on_the_batch_its_order_or_chunks(picked, chunk):
    got = simulate(POP.iloc[picked], chunk=chunk)
    for mine, whole in zip(got, WHOLE, strict=True):
        np.testing.assert_array_equal(mine, whole[picked])


def test_different_customers_and_dates_and_seeds_draw_differently():
    one = POP.iloc[[0] * 3].copy()
    one["customer_id"] = ["a", "b", "a"]
    one["as_of"] = ["2024-01-01", "2024-01-01", "2024-02-01"]
    draws = simulate(one)[1]
    assert draws[0].sum() > 0
    assert not np.array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])
    f, r, t, m = (one[c] for c in ("frequency", "recency", "T", "monetary_value"))
    keys = customer_keys(one)
    seed_0 = clv.simulate_spends(BG, GG, f, r, t, m, (90, 365), draws=64, keys=keys)[1]
    seed_1 = clv.simulate_spends(BG, GG, f, r, t, m, (90, 365), draws=64, keys=keys, seed=1)[1]
    np.testing.assert_array_equal(seed_0, draws)
    assert not np.array_equal(seed_0[0], seed_1[0])


def test_rows_without_a_customer_id_are_keyed_by_their_summary():
    rows = POP.iloc[[3, 3, 4]].copy()
    rows["customer_id"] = [None, "", None]
    keys = customer_keys(rows)
    assert keys[0] == keys[1] != keys[2]
    assert keys[0] != customer_keys(POP.iloc[[3]])[0]
    alone = Components(BG, PNBD, GG).simulate_spends(rows.iloc[[2]], (90,), draws=64)[0]
    together = Components(BG, PNBD, GG).simulate_spends(rows, (90,), draws=64)[0]
    np.testing.assert_array_equal(alone[0], together[2])


def naive(x: float, t_x: float, big_t: float, m: float, horizon: float, n: int,
          rng: np.random.Generator) -> np.ndarray:
    """The process as `clv.simulate_spend` states it, drawn step by step."""
    p_alive = BG.p_alive(np.array([x]), np.array([t_x]), np.array([big_t]))[0]
    bg, gg = BG.params_, GG.params_
    alive = rng.random(n) < p_alive
    lam = rng.gamma(bg["r"] + x, 1.0 / (bg["alpha"] + big_t), n)
    p = rng.beta(bg["a"], bg["b"] + x, n)
    bought = np.minimum(rng.poisson(lam * horizon), rng.geometric(p)) * alive
    nu = rng.gamma(gg["p"] * x + gg["q"], 1.0 / (gg["gamma"] + x * m), n)
    out = np.zeros(n)
    some = bought > 0
    out[some] = rng.gamma(bought[some] * gg["p"], 1.0 / nu[some])
    return out


@pytest.mark.parametrize(("x", "t_x", "big_t", "m"), [(0, 0, 200, 0), (4, 150, 300, 55.0),
                                                      (30, 350, 360, 20.0)])
def test_the_draws_follow_the_process_they_simulate(x, t_x, big_t, m):
    n = 40_000
    ours = clv.simulate_spends(BG, GG, [x], [t_x], [big_t], [m], (90, 365), draws=n,
                               keys=np.array([7], dtype=np.uint64))
    for horizon, draws in zip((90, 365), ours, strict=True):
        draws = draws[0]
        want = naive(x, t_x, big_t, m, horizon, n, np.random.default_rng(horizon))
        assert abs(np.mean(draws == 0) - np.mean(want == 0)) < 0.015
        assert stats.ks_2samp(draws[draws > 0], want[want > 0]).pvalue > 1e-3


def test_counter_based_variates_have_their_distributions():
    cells = keyed_random.cell_states(np.full(30_000, 11, dtype=np.uint64), np.arange(30_000))
    u = keyed_random.uniform(cells, 0)
    for shape in (0.4, 1.0, 7.5):
        got = keyed_random.gammas(cells, 1, np.full(len(cells), shape))
        assert stats.kstest(got, stats.gamma(shape).cdf).pvalue > 1e-3
    for size, p in ((0.7, 0.3), (40.0, 0.5)):  # walks from 0 and from the mean
        got = keyed_random.negative_binomials(u, np.array([size]), np.array([p]),
                                              np.zeros(len(u), dtype=np.int64))
        want = stats.nbinom(size, p)
        assert abs(got.mean() - want.mean()) < 4 * want.std() / np.sqrt(len(u))
        np.testing.assert_array_equal(got, want.ppf(u).astype(np.int64))
    np.testing.assert_array_equal(keyed_random.binomials(u, 200, np.full(len(u), 0.3)),
                                  stats.binom(200, 0.3).ppf(u).astype(np.int64))


def test_scores_are_the_same_alone_in_any_batch_chunk_and_worker_count():
    scorer = load_artifact(LEGACY / "customer-scorer" / "artifacts" / "scorer.joblib")
    rows = pd.read_csv(LEGACY / "rows.csv", dtype={"customer_id": str, "as_of": str})
    rows = rows.assign(in_population=True)
    whole = scorer.score(rows, reasons=False)
    alone = pd.concat([scorer.score(rows.iloc[[i]], reasons=False) for i in (0, 5, 17)],
                      ignore_index=True)
    pd.testing.assert_frame_equal(alone[SIMULATED], whole.iloc[[0, 5, 17]][SIMULATED]
                                  .reset_index(drop=True))
    shuffled = rows.sample(frac=1.0, random_state=2)
    for chunk, workers in ((7, 1), (13, 2), (40, 1)):
        got = score_population(scorer, shuffled, RiskBands(), chunk=chunk, reasons=False,
                               workers=workers).set_index("customer_id")
        pd.testing.assert_frame_equal(
            got.loc[whole["customer_id"], SIMULATED].reset_index(drop=True), whole[SIMULATED])


def test_big_chunks_on_two_threads_score_as_small_batches_do():
    """Chunks past the compiled thresholds (the boosters' forest and TreeSHAP tables, the
    simulated futures), two scoring threads and the side thread that builds what they read:
    every score and reason equal to batches of 20 rows (XGBoost and numpy)."""
    scorer = load_artifact(LEGACY / "customer-scorer" / "artifacts" / "scorer.joblib")
    base = pd.read_csv(LEGACY / "rows.csv", dtype={"customer_id": str, "as_of": str})
    rows = pd.concat([base] * -(-1200 // len(base)), ignore_index=True).iloc[:1200]
    rows = rows.assign(customer_id=[f"t{i:05d}" for i in range(len(rows))], in_population=True)
    got = score_population(scorer, rows, RiskBands(), chunk=600, workers=2)
    small = pd.concat([scorer.score(rows.iloc[lo:lo + 20]) for lo in range(0, len(rows), 20)],
                      ignore_index=True)
    assert (got["reasons_raising"] != "").any()
    pd.testing.assert_frame_equal(got[small.columns].sort_values("customer_id")
                                  .reset_index(drop=True), small)

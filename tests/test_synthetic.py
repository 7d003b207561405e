"""The synthetic retailer: determinism, shape, the BG/NBD process, dirty rows, campaign, files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from features.synthetic import DIRTY_KINDS, SyntheticConfig, SyntheticData, generate, write


@pytest.fixture(scope="module")
def big() -> SyntheticData:
    return generate(SyntheticConfig(n_customers=20_000, seed=11))


@pytest.fixture(scope="module")
def dirty() -> SyntheticData:
    return generate(SyntheticConfig(n_customers=4_000, seed=3, dirty_fraction=0.05))


def _frames(d: SyntheticData) -> list[pd.DataFrame]:
    return [d.transactions, d.customers, d.campaign_log, d.truth]


def _sale_orders(d: SyntheticData) -> pd.DataFrame:
    """One row per customer: first sale time and number of repeat sale orders."""
    tx = d.transactions
    orders = tx[tx["quantity"] > 0].drop_duplicates("order_id")
    g = orders.groupby("customer_id")["timestamp"].agg(["min", "max", "count"])
    g["T"] = (pd.Timestamp(d.config.end) - g["min"]).dt.total_seconds() / 86_400
    g["x"] = g["count"] - 1
    return g.join(d.truth.set_index("customer_id"))


def test_same_seed_same_data_different_seed_different_data() -> None:
    cfg = SyntheticConfig(n_customers=1_500, seed=5, dirty_fraction=0.02)
    one, two = generate(cfg), generate(cfg)
    for a, b in zip(_frames(one), _frames(two), strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert one.injected == two.injected
    other = generate(cfg.model_copy(update={"seed": 6}))
    assert not other.transactions.equals(one.transactions)
    assert not np.allclose(other.truth["lam"], one.truth["lam"])


def test_rows_scale_with_customers(big: SyntheticData) -> None:
    small = generate(SyntheticConfig(n_customers=5_000, seed=11))
    per_small = len(small.transactions) / 5_000
    per_big = len(big.transactions) / 20_000
    assert 8.5 < per_small < 12.0
    assert 8.5 < per_big < 12.0
    assert abs(per_small / per_big - 1) < 0.15
    assert big.truth["customer_id"].is_unique and len(big.truth) == 20_000
    assert len(big.customers) == 20_000
    assert set(big.transactions["customer_id"]) == set(big.customers["customer_id"])


def test_clean_transactions_are_well_formed(big: SyntheticData) -> None:
    tx = big.transactions
    assert list(tx.columns) == [
        "customer_id", "order_id", "timestamp", "product_id", "quantity", "price", "amount",
        "channel", "cost",
    ]
    assert tx["timestamp"].dtype == "datetime64[us]"
    assert tx["timestamp"].is_monotonic_increasing
    assert tx["timestamp"].min() >= pd.Timestamp(big.config.start)
    assert (tx["timestamp"] < pd.Timestamp(big.config.end)).all()
    assert not tx.isna().any().any()
    assert not tx.duplicated().any()
    assert set(tx["channel"]) <= {"web", "store", "app"}
    assert tx["product_id"].str.fullmatch(r"p\d{4}").all()
    np.testing.assert_array_equal(tx["amount"], tx["quantity"] * tx["price"])
    assert (tx["price"] > 0).all()
    sale = tx["quantity"] > 0
    assert (tx.loc[sale, "amount"] > 0).all()
    assert (tx.loc[~sale, "amount"] < 0).all()
    assert tx.loc[sale, "order_id"].str.startswith("o").all()
    assert tx.loc[~sale, "order_id"].str.startswith("r").all()
    assert tx.loc[sale, "quantity"].isin([1.0, 2.0, 3.0]).all()
    assert 0.02 < (~sale).sum() / sale.sum() < 0.04
    per_order = tx[sale].groupby("order_id")
    assert (per_order["customer_id"].nunique() == 1).all()
    assert (per_order["timestamp"].nunique() == 1).all()
    assert not tx[sale].duplicated(["order_id", "product_id"]).any()
    assert 40 < per_order["amount"].sum().mean() < 80


def test_returns_follow_a_sale_of_the_same_product(big: SyntheticData) -> None:
    tx = big.transactions
    ret = tx[tx["quantity"] < 0]
    sales = tx[tx["quantity"] > 0]
    first_sale = sales.groupby(["customer_id", "product_id"])["timestamp"].min()
    keys = pd.MultiIndex.from_frame(ret[["customer_id", "product_id"]])
    gap = (ret["timestamp"].to_numpy() - first_sale.reindex(keys).to_numpy()) / pd.Timedelta(
        days=1
    )
    assert (gap >= 1).all()


def test_latent_parameters_match_their_priors(big: SyntheticData) -> None:
    cfg = big.config
    tr = big.truth
    assert tr["lam"].mean() == pytest.approx(cfg.r / cfg.alpha, rel=0.05)
    assert tr["p"].mean() == pytest.approx(cfg.a / (cfg.a + cfg.b), rel=0.04)
    assert tr["nu"].mean() == pytest.approx(cfg.gg_q / cfg.gg_gamma, rel=0.03)


def test_purchase_counts_follow_bgnbd(big: SyntheticData) -> None:
    """Given each customer's lambda, p and window T, BG/NBD fixes these expectations exactly."""
    g = _sale_orders(big)
    no_repeat = np.exp(-g["lam"] * g["T"])
    assert (g["x"] == 0).mean() == pytest.approx(no_repeat.mean(), abs=0.012)
    dropped = 1 - np.exp(-g["p"] * g["lam"] * g["T"])
    assert g["dropout_at"].notna().mean() == pytest.approx(dropped.mean(), abs=0.015)
    repeats = (1 - np.exp(-g["p"] * g["lam"] * g["T"])) / g["p"]
    assert g["x"].mean() == pytest.approx(repeats.mean(), rel=0.04)


def test_dropout_is_at_the_last_purchase(big: SyntheticData) -> None:
    g = _sale_orders(big)
    gone = g[g["dropout_at"].notna()]
    assert (gone["dropout_at"] == gone["max"]).all()
    assert (gone["x"] >= 1).all()


def test_bgnbd_fit_recovers_parameters() -> None:
    """Per-order times (not calendar days: merging same-day orders biases alpha up ~6%)."""
    import lifetimes

    d = generate(SyntheticConfig(n_customers=40_000, seed=1))
    g = _sale_orders(d)
    recency = (g["max"] - g["min"]).dt.total_seconds() / 86_400
    fit = lifetimes.BetaGeoFitter().fit(g["x"], recency, g["T"])
    for name in ("r", "alpha", "a", "b"):
        assert fit.params_[name] == pytest.approx(getattr(d.config, name), rel=0.12), name


def test_customers_table(big: SyntheticData) -> None:
    cu = big.customers
    first = big.transactions.groupby("customer_id")["timestamp"].min()
    lead = first.reindex(cu["customer_id"]).to_numpy() - cu["signup_at"].to_numpy()
    assert (lead >= pd.Timedelta(0)).all()
    assert (lead <= pd.Timedelta(days=7)).all()
    assert list(cu["region"].cat.categories) == ["north", "south", "east", "west"]
    for channel, share in big.config.consent.items():
        assert cu[f"consent_{channel}"].dtype == bool
        assert cu[f"consent_{channel}"].mean() == pytest.approx(share, abs=0.02)


def test_injected_counts_match_the_frame(dirty: SyntheticData) -> None:
    tx = dirty.transactions
    inj = dirty.injected
    assert set(inj) == set(DIRTY_KINDS)
    assert all(v > 0 for v in inj.values())
    end = pd.Timestamp(dirty.config.end)
    flags = {
        "missing_customer_id": tx["customer_id"].isna(),
        "duplicate_line": tx.duplicated(keep="first"),
        "non_positive_price": (tx["price"] <= 0) & (tx["quantity"] > 0),
        "after_extraction_date": tx["timestamp"] >= end,
        "non_product": tx["product_id"] == "POSTAGE",
    }
    for kind, mask in flags.items():
        assert int(mask.sum()) == inj[kind], kind
    assert (pd.DataFrame(flags).sum(axis=1) <= 1).all()
    assert (tx.loc[flags["non_product"], "price"] > 0).all()
    assert (tx.loc[flags["non_positive_price"], "price"] == 0).any()
    assert (tx.loc[flags["non_positive_price"], "price"] < 0).any()
    assert tx["timestamp"].is_monotonic_increasing


def test_dirty_rows_leave_the_clean_data_alone(dirty: SyntheticData) -> None:
    clean = generate(dirty.config.model_copy(update={"dirty_fraction": 0.0}))
    assert set(clean.injected.values()) == {0}
    n_bad = sum(dirty.injected.values())
    assert n_bad == pytest.approx(0.05 * len(clean.transactions), abs=1)
    assert len(dirty.transactions) == len(clean.transactions) + n_bad
    bad = dirty.transactions["order_id"].str.startswith("x") | (
        dirty.transactions["product_id"] == "POSTAGE"
    )
    bad |= dirty.transactions.duplicated(keep="first")
    pd.testing.assert_frame_equal(
        dirty.transactions[~bad].reset_index(drop=True), clean.transactions
    )
    for a, b in zip(_frames(dirty)[1:], _frames(clean)[1:], strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_campaign_is_randomised_with_known_uplift(big: SyntheticData) -> None:
    log = big.campaign_log
    cfg = big.config
    assert cfg.campaign_date == cfg.end - dt.timedelta(days=90)
    assert (log["campaign_id"] == "c-winback-1").all()
    assert (log["sent_at"] == pd.Timestamp(cfg.campaign_date) + pd.Timedelta(hours=9)).all()
    assert (log["arm"] == "treatment").mean() == pytest.approx(0.5, abs=0.02)
    assert ((log["arm"] == "treatment") == (log["offer_id"] == "winback-10")).all()
    assert (log.loc[log["arm"] == "control", "offer_id"] == "").all()
    assert (log["converted"] <= log["visit"]).all()
    assert ((log["revenue"] > 0) == (log["converted"] == 1)).all()
    first_buy = big.transactions.groupby("customer_id")["timestamp"].min()
    eligible = set(first_buy[first_buy < pd.Timestamp(cfg.campaign_date)].index)
    assert set(log["customer_id"]) == eligible and log["customer_id"].is_unique

    full = log.merge(big.truth, on="customer_id")

    def lift(rows: pd.DataFrame, outcome: str) -> float:
        rates = rows.groupby("arm")[outcome].mean()
        return float(rates["treatment"] - rates["control"])

    pers = full[full["persuadable"]]
    assert len(pers) > 4_000
    assert lift(pers, "converted") == pytest.approx(0.10, abs=0.03)
    assert lift(pers, "visit") == pytest.approx(0.15, abs=0.04)
    neutral = full[full["true_uplift"] == 0]
    assert lift(neutral, "converted") == pytest.approx(0.0, abs=0.02)
    control = full[full["arm"] == "control"]
    assert control["visit"].mean() == pytest.approx(0.12, abs=0.04)
    assert control["converted"].mean() == pytest.approx(0.025, abs=0.015)


def test_write_produces_readable_files(tmp_path: Path, dirty: SyntheticData) -> None:
    paths = write(dirty, tmp_path / "out")
    assert set(paths) == {"transactions", "customers", "campaign_log", "truth"}
    pd.testing.assert_frame_equal(pd.read_parquet(paths["truth"]), dirty.truth)
    tables = {
        "transactions": dirty.transactions,
        "customers": dirty.customers,
        "campaign_log": dirty.campaign_log,
    }
    expected_columns = {
        "transactions": [
            "customer_id", "order_id", "timestamp", "product_id", "quantity", "price", "channel",
            "cost",
        ],
        "customers": ["customer_id", "signup_at", "consent_email", "consent_sms", "consent_push"],
        "campaign_log": [
            "customer_id", "campaign_id", "offer_id", "sent_at", "arm", "visit", "converted",
            "revenue",
        ],
    }
    for table, frame in tables.items():
        doc = yaml.safe_load(paths[table].read_text(encoding="utf-8"))
        assert list(doc)[:5] == ["name", "table", "format", "path", "extracted_at"]
        assert doc["table"] == table
        assert doc["format"] == "parquet"
        assert doc["extracted_at"] == "2024-01-01"
        assert doc["columns"] == {c: c for c in expected_columns[table]}
        data_path = paths[table].parent / doc["path"]
        pd.testing.assert_frame_equal(pd.read_parquet(data_path), frame)
    tx_doc = yaml.safe_load(paths["transactions"].read_text(encoding="utf-8"))
    assert tx_doc["name"] == "synthetic-transactions"
    assert tx_doc["derive"] == {"amount": "quantity * price"}
    assert tx_doc["non_product_codes"] == ["POSTAGE"]
    cu_doc = yaml.safe_load(paths["customers"].read_text(encoding="utf-8"))
    assert cu_doc["keep"] == ["region"]


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        SyntheticConfig(start=dt.date(2024, 1, 1), end=dt.date(2023, 1, 1))
    with pytest.raises(ValidationError):
        SyntheticConfig(return_rate=1.5)
    with pytest.raises(ValidationError):
        SyntheticConfig(n_customer=10)
    explicit = SyntheticConfig(campaign_date=dt.date(2023, 6, 1))
    assert explicit.campaign_date == dt.date(2023, 6, 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_customers=st.integers(1, 60),
    n_products=st.integers(1, 12),
    lines=st.floats(1.0, 6.0),
    seed=st.integers(0, 10_000),
    dirty_fraction=st.sampled_from([0.0, 0.1, 0.5]),
    days=st.integers(1, 400),
)
def test_small_configs_keep_the_invariants(
    n_customers: int, n_products: int, lines: float, seed: int, dirty_fraction: float, days: int
) -> None:
    start = dt.date(2023, 1, 1)
    cfg = SyntheticConfig(
        n_customers=n_customers,
        n_products=n_products,
        mean_lines_per_order=lines,
        seed=seed,
        dirty_fraction=dirty_fraction,
        start=start,
        end=start + dt.timedelta(days=days),
        return_rate=0.2,
    )
    d = generate(cfg)
    tx = d.transactions
    bad = sum(d.injected.values())
    assert bad == round(dirty_fraction * (len(tx) - bad))
    clean = tx[
        ~tx["order_id"].str.startswith("x")
        & (tx["product_id"] != "POSTAGE")
        & ~tx.duplicated(keep="first")
    ]
    assert (clean["timestamp"] < pd.Timestamp(cfg.end)).all()
    assert clean["customer_id"].notna().all()
    sale = clean["quantity"] > 0
    assert (clean.loc[sale, "amount"] > 0).all() and (clean.loc[~sale, "amount"] < 0).all()
    assert not clean[sale].duplicated(["order_id", "product_id"]).any()
    assert clean["customer_id"].nunique() == n_customers
    assert int(tx["customer_id"].isna().sum()) == d.injected["missing_customer_id"]
    assert int(tx.duplicated().sum()) == d.injected["duplicate_line"]

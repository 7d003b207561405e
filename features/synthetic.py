"""A seeded synthetic retailer: the project's default data and test workhorse.

Purchases follow the BG/NBD process exactly (day units), order values follow Gamma-Gamma, baskets
have popularity and co-purchase structure, some lines are returned, and one randomised win-back
campaign has a known heterogeneous effect. The latent truth is returned alongside the data so that
tests and benchmarks can check that models recover it. Everything is vectorised numpy: one million
customers (about ten million lines) take seconds, not minutes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.contract import CONSENT_PREFIX, Channel

CAMPAIGN_ID = "c-winback-1"
OFFER_ID = "winback-10"
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")
SALE_CHANNELS: tuple[str, ...] = ("web", "store", "app")
NON_PRODUCT = "POSTAGE"
# Names match the quarantine reasons of features.validate, so counts compare one to one.
DIRTY_KINDS: tuple[str, ...] = (
    "missing_customer_id",
    "duplicate_line",
    "non_positive_price",
    "after_extraction_date",
    "non_product",
)

_US_PER_DAY = 86_400_000_000
_US_PER_SECOND = 1_000_000
_N_CATEGORIES = 15
_P_PREFERRED = 0.6
_ZIPF_EXPONENT = 1.0
_QUANTITY_P = (0.75, 0.18, 0.07)
_REGION_P = (0.3, 0.25, 0.25, 0.2)
_CHANNEL_P = (0.5, 0.3, 0.2)
_P_PREFERRED_CHANNEL = 0.7
_MARGIN_BETA = (4.0, 6.0)  # each product's margin share of its price
# Campaign response: (visit, converted) probabilities per segment and arm.
_PERSUADABLE_RECENCY = (30.0, 180.0)
_SLEEPING_DOG_RECENCY = 14.0
_BASE = (0.10, 0.02)
_BASE_RECENT = (0.25, 0.06)
_UPLIFT_PERSUADABLE = (0.15, 0.10)
_UPLIFT_SLEEPING_DOG = (0.0, -0.03)


class SyntheticConfig(BaseModel):
    """Parameters of the synthetic retailer; the defaults give ~10 lines per customer over 2 years.

    BG/NBD in day units: purchase rate lambda ~ Gamma(shape=r, rate=alpha) per day, dropout
    probability p ~ Beta(a, b) after every repeat purchase. As in Fader, Hardie & Lee (2005) a
    customer cannot drop out right after the first purchase; `dropout_at_first=True` allows it,
    which gives the MBG/NBD process instead (BG/NBD fits then do not recover r, alpha, a, b).

    Gamma-Gamma spend: customer scale nu ~ Gamma(gg_q, rate=gg_gamma), order value
    ~ Gamma(gg_p, rate=nu), so the mean order value is gg_p * gg_gamma / (gg_q - 1) = 60.
    """

    model_config = ConfigDict(extra="forbid")

    n_customers: int = Field(2000, ge=1)
    start: dt.date = dt.date(2022, 1, 1)
    end: dt.date = dt.date(2024, 1, 1)
    seed: int = 0
    r: float = Field(0.75, gt=0)
    alpha: float = Field(40.0, gt=0)
    a: float = Field(0.8, gt=0)
    b: float = Field(4.0, gt=0)
    gg_p: float = Field(6.0, gt=0)
    gg_q: float = Field(4.0, gt=0)
    gg_gamma: float = Field(30.0, gt=0)
    n_products: int = Field(300, ge=1)
    mean_lines_per_order: float = Field(2.2, ge=1)
    return_rate: float = Field(0.03, ge=0, le=1)
    consent: dict[Channel, float] = {"email": 0.7, "sms": 0.4, "push": 0.3}
    campaign_date: dt.date | None = None
    campaign_treatment_share: float = Field(0.5, ge=0, le=1)
    dirty_fraction: float = Field(0.0, ge=0)
    dropout_at_first: bool = False

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.end <= self.start:
            raise ValueError("`end` must be after `start`")
        if any(not 0 <= v <= 1 for v in self.consent.values()):
            raise ValueError("consent shares must be in [0, 1]")
        if self.campaign_date is None:
            self.campaign_date = self.end - dt.timedelta(days=90)
        return self


@dataclass
class SyntheticData:
    """Source-form tables, the latent truth per customer and the count of injected bad rows.

    `injected` maps each dirty kind (named as the quarantine reason that should catch it) to the
    number of rows added; all zero for clean data. Dirty rows come from their own random stream,
    so the clean rows and the other tables do not depend on `dirty_fraction`. `config` is what
    generated the data.
    """

    transactions: pd.DataFrame
    customers: pd.DataFrame
    campaign_log: pd.DataFrame
    truth: pd.DataFrame
    config: SyntheticConfig
    injected: dict[str, int] = field(default_factory=dict)


@dataclass
class _Lines:
    """Transaction lines as integer codes; customer -1 is a missing id."""

    customer: np.ndarray
    order: np.ndarray
    ts: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    channel: np.ndarray

    def take(self, idx: np.ndarray) -> _Lines:
        return _Lines(*(getattr(self, f)[idx] for f in _LINE_FIELDS))

    @staticmethod
    def concat(parts: list[_Lines]) -> _Lines:
        return _Lines(*(np.concatenate([getattr(p, f) for p in parts]) for f in _LINE_FIELDS))


_LINE_FIELDS = ("customer", "order", "ts", "product", "quantity", "price", "channel")


def generate(config: SyntheticConfig) -> SyntheticData:
    """Draw customers, purchases, baskets, returns, the campaign and (optionally) dirty rows.

    Purchases: the first purchase is uniform in [start, end); while alive a customer buys at
    Poisson rate lambda and drops out after each repeat purchase with probability p (BG/NBD);
    purchases on or after `end` are not observed. Each purchase is one order of
    1 + Poisson(mean_lines_per_order - 1) distinct products whose prices are scaled so the order
    totals its Gamma-Gamma value. Returns are separate `r...` orders 1-30 days after the sale.
    Each product keeps a share of its price as margin (Beta(4, 6), mean 40%): a line's `cost`
    is its amount times one minus that share (a return's is negative, like its amount).

    Campaign: customers whose first purchase precedes `campaign_date` are randomised. The effect
    depends on recency R (days from the last purchase to the campaign date): persuadable
    (30 <= R < 180, lapsing customers) gain +0.15 in P(visit) and +0.10 in P(converted) from
    base rates 0.10 / 0.02; sleeping dogs (R < 14, base 0.25 / 0.06) lose 0.03 in P(converted);
    the rest are unaffected. Campaign outcomes are not added to the transactions, so the purchase
    process stays exactly BG/NBD.
    """
    cfg = config
    # The cost stream is a third child of the seed: the other tables are those of two children.
    rng, dirty_rng, cost_rng = (np.random.default_rng(s)
                                for s in np.random.SeedSequence(cfg.seed).spawn(3))
    n = cfg.n_customers
    start_us = _day_us(cfg.start)
    end_us = _day_us(cfg.end)
    span = (end_us - start_us) / _US_PER_DAY

    lam = rng.gamma(cfg.r, 1.0 / cfg.alpha, n)
    p = np.clip(rng.beta(cfg.a, cfg.b, n), 1e-12, 1.0)
    nu = rng.gamma(cfg.gg_q, 1.0 / cfg.gg_gamma, n)
    t0 = rng.random(n) * span
    order_cust, order_t, dropout_t = _purchases(rng, lam, p, t0, span, cfg.dropout_at_first)

    order_ts = np.minimum(start_us + _floor_seconds(order_t), end_us - _US_PER_SECOND)
    n_orders = len(order_cust)
    per_customer = np.bincount(order_cust, minlength=n)
    first_ts = order_ts[np.cumsum(per_customer) - per_customer]
    sales = _baskets(rng, cfg, order_cust, order_ts, nu)
    returns = _returns(rng, cfg, sales, end_us, n_orders)
    n_returns = len(returns.ts)
    lines = _Lines.concat([sales, returns])
    injected = dict.fromkeys(DIRTY_KINDS, 0)
    n_fresh = 0
    if cfg.dirty_fraction > 0:
        first_code = n_orders + n_returns
        dirty, injected, n_fresh = _dirty(dirty_rng, cfg, sales, len(lines.ts), end_us, first_code)
        lines = _Lines.concat([lines, dirty])
    lines = lines.take(np.argsort(lines.ts, kind="stable"))

    width = max(7, len(str(n)))
    cust_ids = _id_array("c", np.arange(1, n + 1), width)
    region = rng.choice(len(REGIONS), n, p=_REGION_P)
    customers = _customers(rng, cfg, cust_ids, first_ts, region)
    assert cfg.campaign_date is not None
    camp_us = _day_us(cfg.campaign_date)
    campaign, persuadable, uplift = _campaign(
        rng, cfg, cust_ids, first_ts, _last_before(order_cust, order_ts, n, camp_us), nu, camp_us
    )
    dropped = ~np.isnan(dropout_t)
    dropout_us = np.minimum(
        start_us + _floor_seconds(np.where(dropped, dropout_t, 0.0)), end_us - _US_PER_SECOND
    )
    truth = pd.DataFrame(
        {
            "customer_id": cust_ids.to_pandas(),
            "lam": lam,
            "p": p,
            "nu": nu,
            "dropout_at": _as_datetime(dropout_us, nat=~dropped),
            "persuadable": persuadable,
            "true_uplift": uplift,
        }
    )
    order_ids = pa.concat_arrays(
        [
            _id_array("o", np.arange(1, n_orders + 1), width),
            _id_array("r", np.arange(1, n_returns + 1), width),
            _id_array("x", np.arange(1, n_fresh + 1), width),
        ]
    )
    margin = np.append(cost_rng.beta(_MARGIN_BETA[0], _MARGIN_BETA[1], cfg.n_products), 1.0)
    transactions = _transactions_frame(lines, cust_ids, order_ids, cfg.n_products, margin)
    return SyntheticData(transactions, customers, campaign, truth, cfg, injected)


def write(data: SyntheticData, out_dir: Path) -> dict[str, Path]:
    """Write the tables as Parquet plus one source config YAML per loadable table.

    Returns the YAML paths for transactions, customers and campaign_log (what the loader reads)
    and the Parquet path of the truth table (which no loader should see).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extracted_at = data.config.end.isoformat()
    tables = {
        "transactions": data.transactions,
        "customers": data.customers,
        "campaign_log": data.campaign_log,
        "truth": data.truth,
    }
    for name, frame in tables.items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    consent = [f"{CONSENT_PREFIX}{c}" for c in data.config.consent]
    specs: dict[str, dict[str, object]] = {
        "transactions": {
            "columns": _identity(
                ["customer_id", "order_id", "timestamp", "product_id", "quantity", "price",
                 "channel", "cost"]
            ),
            "derive": {"amount": "quantity * price"},
            "non_product_codes": [NON_PRODUCT],
        },
        "customers": {
            "columns": _identity(["customer_id", "signup_at", *consent]),
            "keep": ["region"],
        },
        "campaign_log": {
            "columns": _identity(list(data.campaign_log.columns)),
        },
    }
    paths: dict[str, Path] = {}
    for table, spec in specs.items():
        doc = {
            "name": f"synthetic-{table.replace('_', '-')}",
            "table": table,
            "format": "parquet",
            "path": f"{table}.parquet",
            "extracted_at": extracted_at,
            **spec,
        }
        paths[table] = out_dir / f"{table}.yaml"
        paths[table].write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    paths["truth"] = out_dir / "truth.parquet"
    return paths


def _purchases(
    rng: np.random.Generator,
    lam: np.ndarray,
    p: np.ndarray,
    t0: np.ndarray,
    span: float,
    dropout_at_first: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact BG/NBD purchase times (days from start) per customer, grouped by customer in order.

    Ignoring dropout, the repeat purchases in (t0, span) are M ~ Poisson(lambda * (span - t0))
    uniform points. The customer makes J ~ Geometric(p) repeat purchases in all (J - 1 with
    `dropout_at_first`), so the observed repeats are the first K = min(J, M) order statistics,
    drawn as normalised exponential spacings with the remaining M + 1 - K spacings summed into one
    Gamma draw. The customer dropped out before the end iff J <= M, at the last observed purchase.
    """
    n = len(lam)
    window = span - t0
    m = rng.poisson(lam * window)
    repeats = rng.geometric(p) - int(dropout_at_first)
    k = np.minimum(repeats, m)
    cust = np.repeat(np.arange(n), k)
    spacing = rng.exponential(1.0, len(cust))
    csum = np.cumsum(spacing)
    group_start = np.cumsum(k) - k
    before = np.r_[0.0, csum][group_start]
    within = csum - np.repeat(before, k)
    tail = rng.gamma(m + 1 - k, 1.0)
    norm = np.r_[0.0, csum][group_start + k] - before + tail
    repeat_t = t0[cust] + window[cust] * within / norm[cust]

    order_cust = np.repeat(np.arange(n), k + 1)
    order_t = np.empty(len(order_cust))
    first_pos = group_start + np.arange(n)
    order_t[first_pos] = t0
    is_repeat = np.ones(len(order_cust), dtype=bool)
    is_repeat[first_pos] = False
    order_t[is_repeat] = repeat_t
    last = order_t[first_pos + k]
    dropout_t = np.where(repeats <= m, last, np.nan)
    return order_cust.astype(np.int32), order_t, dropout_t


def _catalog(rng: np.random.Generator, n_products: int) -> tuple[np.ndarray, ...]:
    """Zipf popularity, categories and lognormal list prices of the products."""
    n_cat = min(_N_CATEGORIES, n_products)
    weight = 1.0 / rng.permutation(np.arange(1, n_products + 1)) ** _ZIPF_EXPONENT
    category = rng.permutation(np.arange(n_products) % n_cat)
    list_price = np.round(np.exp(rng.normal(np.log(12.0), 0.7, n_products)), 2) + 0.5
    global_cdf = np.cumsum(weight) / weight.sum()
    global_cdf[-1] = 1.0
    by_cat = np.lexsort((np.arange(n_products), category))
    cat_sorted = category[by_cat]
    w = weight[by_cat]
    cat_total = np.bincount(cat_sorted, weights=w, minlength=n_cat)
    within = np.cumsum(w) - np.repeat(np.cumsum(cat_total) - cat_total, np.bincount(cat_sorted))
    within = within / cat_total[cat_sorted]
    cat_end = np.cumsum(np.bincount(cat_sorted, minlength=n_cat))
    within[cat_end - 1] = 1.0
    cat_p = cat_total / cat_total.sum()
    return global_cdf, by_cat, cat_sorted + within, cat_end, cat_p, list_price


def _draw_products(
    rng: np.random.Generator, catalog: tuple[np.ndarray, ...], pref_cat: np.ndarray
) -> np.ndarray:
    """One product per row: from the row's preferred category w.p. 0.6, else by popularity."""
    global_cdf, by_cat, cat_cdf, cat_end, _, _ = catalog
    size = len(pref_cat)
    u = rng.random(size)
    from_global = np.minimum(np.searchsorted(global_cdf, u, side="right"), len(global_cdf) - 1)
    pos = np.searchsorted(cat_cdf, pref_cat + u, side="right")
    from_cat = by_cat[np.minimum(pos, cat_end[pref_cat] - 1)]
    return np.where(rng.random(size) < _P_PREFERRED, from_cat, from_global).astype(np.int32)


def _baskets(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    order_cust: np.ndarray,
    order_ts: np.ndarray,
    nu: np.ndarray,
) -> _Lines:
    """Sale lines of every order: distinct products, quantities, prices summing to the value."""
    n_orders = len(order_cust)
    n = len(nu)
    catalog = _catalog(rng, cfg.n_products)
    cat_p, list_price = catalog[4], catalog[5]
    pref_cat = rng.choice(len(cat_p), n, p=cat_p)
    pref_channel = rng.choice(len(SALE_CHANNELS), n, p=_CHANNEL_P)
    n_lines = np.minimum(1 + rng.poisson(cfg.mean_lines_per_order - 1, n_orders), cfg.n_products)
    line_order = np.repeat(np.arange(n_orders), n_lines)
    line_cat = pref_cat[order_cust][line_order]
    product = _draw_products(rng, catalog, line_cat)
    todo = np.arange(len(product))
    while len(todo):
        key = line_order[todo].astype(np.int64) * cfg.n_products + product[todo]
        srt = np.argsort(key, kind="stable")
        dup = todo[srt[1:][key[srt][1:] == key[srt][:-1]]]
        if not len(dup):
            break
        product[dup] = _draw_products(rng, catalog, line_cat[dup])
        touched = np.zeros(n_orders, dtype=bool)
        touched[line_order[dup]] = True
        todo = np.flatnonzero(touched[line_order])

    quantity = (rng.choice(3, len(product), p=_QUANTITY_P) + 1).astype(np.float64)
    raw = quantity * list_price[product]
    order_raw = np.bincount(line_order, weights=raw, minlength=n_orders)
    value = rng.gamma(cfg.gg_p, 1.0 / nu[order_cust])
    scale = value / order_raw
    price = np.maximum(np.round(list_price[product] * scale[line_order], 2), 0.01)
    channel = np.where(
        rng.random(n_orders) < _P_PREFERRED_CHANNEL,
        pref_channel[order_cust],
        rng.choice(len(SALE_CHANNELS), n_orders, p=_CHANNEL_P),
    ).astype(np.int8)
    rank = np.empty(n_orders, dtype=np.int64)
    rank[np.argsort(order_ts, kind="stable")] = np.arange(n_orders)
    return _Lines(
        customer=order_cust[line_order],
        order=rank[line_order],
        ts=order_ts[line_order],
        product=product,
        quantity=quantity,
        price=price,
        channel=channel[line_order],
    )


def _returns(
    rng: np.random.Generator, cfg: SyntheticConfig, sales: _Lines, end_us: int, n_orders: int
) -> _Lines:
    """Each sale line is returned w.p. return_rate 1-30 days later, as its own `r...` order."""
    picked = np.flatnonzero(rng.random(len(sales.ts)) < cfg.return_rate)
    delay = _floor_seconds(rng.uniform(1.0, 30.0, len(picked)))
    ts = sales.ts[picked] + delay
    keep = ts < end_us
    picked, ts = picked[keep], ts[keep]
    srt = np.argsort(ts, kind="stable")
    picked, ts = picked[srt], ts[srt]
    ret = sales.take(picked)
    ret.ts = ts
    ret.quantity = -ret.quantity
    ret.order = n_orders + np.arange(len(picked))
    return ret


def _dirty(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    sales: _Lines,
    n_clean: int,
    end_us: int,
    first_code: int,
) -> tuple[_Lines, dict[str, int], int]:
    """Bad rows of each kind, built from copies of clean sale lines so each has one defect.

    Rows other than duplicates and postage lines get fresh `x...` orders (codes from
    `first_code`) and postage lines go to distinct orders, so no injected row equals another row
    except the intended duplicates (exactly so while there are fewer bad rows than sale orders).
    Returns the rows, the count per kind and the number of fresh order codes used.
    """
    total = round(cfg.dirty_fraction * n_clean)
    counts = np.full(len(DIRTY_KINDS), total // len(DIRTY_KINDS))
    counts[: total % len(DIRTY_KINDS)] += 1
    injected = {k: int(c) for k, c in zip(DIRTY_KINDS, counts, strict=True)}
    kind = np.array(DIRTY_KINDS)[np.repeat(np.arange(len(DIRTY_KINDS)), counts)]
    post = kind == "non_product"
    base = np.empty(total, dtype=np.int64)
    base[~post] = _sample(rng, len(sales.ts), total - int(post.sum()))
    order_heads = np.flatnonzero(np.r_[True, sales.order[1:] != sales.order[:-1]])
    base[post] = order_heads[_sample(rng, len(order_heads), int(post.sum()))]
    rows = sales.take(base)
    fresh = np.isin(kind, ["missing_customer_id", "non_positive_price", "after_extraction_date"])
    n_fresh = int(fresh.sum())
    rows.order[fresh] = first_code + np.arange(n_fresh)
    rows.customer[kind == "missing_customer_id"] = -1
    bad = kind == "non_positive_price"
    rows.price[bad] = np.where(rng.random(int(bad.sum())) < 0.5, 0.0, -rows.price[bad])
    late = kind == "after_extraction_date"
    rows.ts[late] = end_us + _floor_seconds(rng.uniform(1 / 24, 60.0, int(late.sum())))
    rows.product[post] = cfg.n_products
    rows.quantity[post] = 1.0
    rows.price[post] = rng.choice([2.95, 4.95, 9.95], int(post.sum()))
    return rows, injected, n_fresh


def _sample(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """`size` indices below `n`, without replacement when possible."""
    return rng.choice(n, size, replace=size > n)


def _customers(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    cust_ids: pa.Array,
    first_ts: np.ndarray,
    region: np.ndarray,
) -> pd.DataFrame:
    """Signup a few days before (or at) the first purchase, region and independent consents."""
    n = len(first_ts)
    lead = np.where(rng.random(n) < 0.4, 0, _floor_seconds(rng.uniform(0.0, 7.0, n)))
    frame = pd.DataFrame(
        {
            "customer_id": cust_ids.to_pandas(),
            "signup_at": _as_datetime(first_ts - lead),
            "region": pd.Categorical.from_codes(region, categories=list(REGIONS)),
        }
    )
    for channel, share in cfg.consent.items():
        frame[f"{CONSENT_PREFIX}{channel}"] = rng.random(n) < share
    return frame


def _last_before(
    order_cust: np.ndarray, order_ts: np.ndarray, n: int, cutoff_us: int
) -> np.ndarray:
    """Each customer's last purchase time (us) before the cutoff; int64 min if there is none."""
    last = np.full(n, np.iinfo(np.int64).min)
    mask = order_ts < cutoff_us
    np.maximum.at(last, order_cust[mask], order_ts[mask])
    return last


def _campaign(
    rng: np.random.Generator,
    cfg: SyntheticConfig,
    cust_ids: pa.Array,
    first_ts: np.ndarray,
    last_before: np.ndarray,
    nu: np.ndarray,
    camp_us: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The randomised win-back campaign log, and who is persuadable with what true uplift."""
    has_history = last_before > np.iinfo(np.int64).min
    recency = np.where(has_history, (camp_us - last_before) / _US_PER_DAY, np.inf)
    lo, hi = _PERSUADABLE_RECENCY
    persuadable = (recency >= lo) & (recency < hi)
    sleeping = recency < _SLEEPING_DOG_RECENCY
    uplift = np.where(persuadable, _UPLIFT_PERSUADABLE[1], 0.0)
    uplift = np.where(sleeping, _UPLIFT_SLEEPING_DOG[1], uplift)

    eligible = np.flatnonzero(first_ts < camp_us)
    m = len(eligible)
    treated = rng.random(m) < cfg.campaign_treatment_share
    pers, sleep = persuadable[eligible], sleeping[eligible]
    p_visit = np.where(sleep, _BASE_RECENT[0], _BASE[0])
    p_conv = np.where(sleep, _BASE_RECENT[1], _BASE[1])
    p_visit = p_visit + treated * (pers * _UPLIFT_PERSUADABLE[0] + sleep * _UPLIFT_SLEEPING_DOG[0])
    p_conv = p_conv + treated * (pers * _UPLIFT_PERSUADABLE[1] + sleep * _UPLIFT_SLEEPING_DOG[1])
    visit = rng.random(m) < p_visit
    converted = visit & (rng.random(m) < p_conv / p_visit)
    value = np.maximum(np.round(rng.gamma(cfg.gg_p, 1.0 / nu[eligible]), 2), 0.01)
    log = pd.DataFrame(
        {
            "customer_id": cust_ids.take(pa.array(eligible)).to_pandas(),
            "campaign_id": pd.Series([CAMPAIGN_ID] * m, dtype="str"),
            "offer_id": pd.Series(np.where(treated, OFFER_ID, ""), dtype="str"),
            "sent_at": _as_datetime(np.full(m, camp_us + 9 * 3600 * _US_PER_SECOND)),
            "arm": pd.Series(np.where(treated, "treatment", "control"), dtype="str"),
            "visit": visit.astype(np.float64),
            "converted": converted.astype(np.float64),
            "revenue": np.where(converted, value, 0.0),
        }
    )
    return log, persuadable, uplift


def _transactions_frame(
    lines: _Lines, cust_ids: pa.Array, order_ids: pa.Array, n_products: int, margin: np.ndarray
) -> pd.DataFrame:
    """Gather the string ids (materialised once per distinct value) by code into a frame;
    `margin` is each product code's margin share (the line costs the rest of its amount)."""
    product_ids = pa.concat_arrays(
        [
            _id_array("p", np.arange(1, n_products + 1), max(4, len(str(n_products)))),
            pa.array([NON_PRODUCT]),
        ]
    )
    table = pa.table(
        {
            "customer_id": cust_ids.take(pa.array(lines.customer, mask=lines.customer < 0)),
            "order_id": order_ids.take(pa.array(lines.order)),
            "timestamp": pa.array(lines.ts.astype("datetime64[us]")),
            "product_id": product_ids.take(pa.array(lines.product)),
            "quantity": lines.quantity,
            "price": lines.price,
            "amount": lines.quantity * lines.price,
            "channel": pa.array(list(SALE_CHANNELS)).take(pa.array(lines.channel)),
            "cost": np.round(lines.quantity * lines.price * (1.0 - margin[lines.product]), 2),
        }
    )
    return table.to_pandas()


def _id_array(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Fixed-width ids like `c0000042`, built straight into an Arrow string buffer."""
    numbers = np.asarray(numbers, dtype=np.int64)
    width = max(width, len(str(int(numbers.max())))) if len(numbers) else width
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (numbers[:, None] // powers % 10 + ord("0")).astype(np.uint8)
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    chars = np.hstack([np.broadcast_to(head, (len(numbers), len(head))), digits])
    size = chars.shape[1]
    offsets = (np.arange(len(numbers) + 1, dtype=np.int32) * size).astype(np.int32)
    return pa.StringArray.from_buffers(
        len(numbers), pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars))
    )


def _identity(names: list[str]) -> dict[str, str]:
    return {c: c for c in names}


def _day_us(day: dt.date) -> int:
    return int(np.datetime64(day, "D").astype("datetime64[us]").astype(np.int64))


def _floor_seconds(days: np.ndarray) -> np.ndarray:
    """Days as whole seconds in microseconds (floored, so times stay before the end)."""
    return np.floor(np.asarray(days) * 86_400).astype(np.int64) * _US_PER_SECOND


def _as_datetime(us: np.ndarray, nat: np.ndarray | None = None) -> pd.Series:
    values = np.asarray(us, dtype=np.int64).astype("datetime64[us]")
    if nat is not None:
        values[nat] = np.datetime64("NaT")
    return pd.Series(values)

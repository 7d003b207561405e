"""Request and answer payloads of the service (pydantic; they make its OpenAPI document).

Every request value is bounded: ids and labels by length, lists by count, numbers by a finite
range, dates and times by a plausible window, so that no client input reaches the models or
the campaign log in a shape they cannot handle (a client's mistake answers 422, never 5xx).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from features.campaign_log import EngineEvent
from features.contract import Channel, ValueBasis
from serving.profit import COST_TO_SERVE_DAYS

MAX_IDS = 1000
MAX_DAYS = 36_500  # a century: the longest customer history a row can describe
MAX_ORDERS = 1_000_000
MAX_MONEY = 1e9
EARLIEST = dt.datetime(2000, 1, 1)  # no event or as_of of this service is older
LATEST_AS_OF = dt.date(2100, 1, 1)
FUTURE_SLACK = dt.timedelta(hours=1)  # clock skew allowed on a reported event time


def _plausible_as_of(v: dt.date) -> dt.date:
    if not EARLIEST.date() <= v <= LATEST_AS_OF:
        raise ValueError(f"must be between {EARLIEST.date()} and {LATEST_AS_OF}")
    return v


PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (NUL breaks PostgreSQL text)
# Every id a client sends: printable, with at least one character that is not a space.
Id = Annotated[str, Field(min_length=1, max_length=128,
                          pattern=r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$")]
Ids = Annotated[list[Id], Field(min_length=1, max_length=MAX_IDS)]
TopN = Annotated[int, Field(ge=1, le=10_000, strict=True)]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=PRINTABLE)]
Labels = Annotated[list[Label], Field(max_length=32)]
Days = Annotated[int, Field(ge=0, le=MAX_DAYS)]
Orders = Annotated[int, Field(ge=0, le=MAX_ORDERS)]
Money = Annotated[float, Field(ge=0, le=MAX_MONEY, allow_inf_nan=False)]
NetMoney = Annotated[float, Field(ge=-MAX_MONEY, le=MAX_MONEY, allow_inf_nan=False)]
AsOf = Annotated[dt.date, AfterValidator(_plausible_as_of)]


class Request(BaseModel):
    """Base of every request payload: unknown fields, NaN/Infinity and values of another JSON
    type (`"5"` or `true` for a number) are refused, as the OpenAPI document says."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class ErrorBody(BaseModel):
    """Every error answer: one line for a person (naming the field), the detail for a program."""

    error: str
    detail: str


class CustomerScore(BaseModel):
    customer_id: str
    status: Literal["ok", "unknown_customer"]
    churn_probability: float | None = None
    risk_band: Literal["low", "medium", "high"] | None = None
    risk_percentile: float | None = None
    p_alive: float | None = None
    expected_purchases: float | None = None
    expected_spend: float | None = None
    expected_next_purchase: str | None = None
    clv: float | None = None
    clv_p10: float | None = None
    clv_p50: float | None = None
    clv_p90: float | None = None
    value_at_risk: float | None = None
    rfm_segment: str | None = None
    value_tier: str | None = None
    value_basis: ValueBasis | None = Field(
        None, description="what clv, clv_p10/p50/p90 and value_at_risk count: 'margin' (revenue "
                          "x the customer's margin rate, when the source has costs) or 'revenue'")
    margin_rate: float | None = Field(
        None, description="gross margin / net revenue before as_of (1 without costs)")
    gross_margin: float | None = Field(
        None, description="net revenue - net cost of goods before as_of (revenue without costs)")
    cost_to_serve: float | None = Field(
        None, description="the cost of the customer's campaign contacts logged in the "
                          f"{COST_TO_SERVE_DAYS} days before as_of, at the offer catalogue's "
                          "cost per contact (0 without contacts); null when no campaign log "
                          "and catalogue are configured")
    net_value: float | None = Field(
        None, description="clv - cost_to_serve; null when cost_to_serve is null")
    reasons_raising: list[str] = Field(default_factory=list)
    reasons_lowering: list[str] = Field(default_factory=list)
    horizon_days: int | None = None
    as_of: str | None = None
    model_version: str | None = None


class ScoreResponse(BaseModel):
    model_version: str
    as_of: str
    results: list[CustomerScore]


class FeatureRow(Request):
    """One customer's features as `features build` writes them (what-if or brand-new).

    The rules below are those of features/pointintime.py, with day numbers f (first purchase),
    l (last purchase) and a (as_of): frequency = repeat purchase days, recency = l - f,
    T = a - 1 - f, tenure_days = a - f, days_since_last = a - l, and orders_<w>d the orders in
    the w days before a. A row that no purchase history can produce is refused (422) rather
    than scored; tenure_days and days_since_last may also be counted to a rather than a - 1.
    """

    customer_id: Id
    as_of: AsOf | None = None
    frequency: Days
    recency: Days
    T: Days
    monetary_value: Money
    days_since_last: int = Field(ge=0, le=MAX_DAYS + 1)
    tenure_days: int = Field(ge=0, le=MAX_DAYS + 1)
    orders_30d: Orders = 0
    orders_90d: Orders = 0
    orders_180d: Orders = 0
    orders_365d: Orders = 0
    spend_30d: NetMoney = 0.0  # net of refunds
    spend_90d: NetMoney = 0.0  # net of refunds
    spend_180d: NetMoney = 0.0  # net of refunds
    spend_365d: NetMoney = 0.0  # net of refunds
    total_orders: int = Field(ge=1, le=MAX_ORDERS)
    total_spend: float = Field(ge=-10 * MAX_MONEY, le=10 * MAX_MONEY)  # net of refunds
    avg_order_value: Money
    basket_size: float = Field(1.0, ge=0, le=1e5)
    distinct_products: Orders = 1
    gap_mean: float | None = Field(None, ge=0, le=MAX_DAYS)
    gap_std: float | None = Field(None, ge=0, le=MAX_DAYS)
    overdue_ratio: float | None = Field(None, ge=0, le=MAX_DAYS + 1)
    trend_90d: float | None = Field(None, ge=-1, le=1)
    return_rate: float = Field(0.0, ge=0, le=1)
    r_score: int = Field(3, ge=1, le=5)
    f_score: int = Field(3, ge=1, le=5)
    m_score: int = Field(3, ge=1, le=5)
    orders_next90_ly: Orders = 0
    spend_next90_ly: NetMoney = 0.0  # net of refunds

    @model_validator(mode="after")
    def _consistent(self) -> FeatureRow:
        problems = self.impossibilities()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def impossibilities(self) -> list[str]:
        """What no purchase history can produce, one sentence each naming its field."""
        found = []
        if self.recency > self.T:
            found.append(f"recency ({self.recency}) exceeds T ({self.T})")
        if self.frequency > self.recency:
            found.append(f"frequency ({self.frequency}) exceeds recency ({self.recency}): "
                         f"repeat purchase days lie between the first and the last purchase")
        if self.tenure_days not in (self.T, self.T + 1):
            found.append(f"tenure_days ({self.tenure_days}) must be T ({self.T}) or T + 1")
        since = self.T - self.recency
        if self.days_since_last not in (since, since + 1):
            found.append(f"days_since_last ({self.days_since_last}) must be T - recency "
                         f"({since}) or one more")
        if self.total_orders < self.frequency + 1:
            found.append(f"total_orders ({self.total_orders}) is below the purchase days "
                         f"(frequency + 1 = {self.frequency + 1})")
        windows = [(30, self.orders_30d), (90, self.orders_90d), (180, self.orders_180d),
                   (365, self.orders_365d)]
        for (w, n), (wider, more) in zip(windows, windows[1:], strict=False):
            if n > more:
                found.append(f"orders_{w}d ({n}) exceeds orders_{wider}d ({more})")
        if self.orders_365d > self.total_orders:
            found.append(f"orders_365d ({self.orders_365d}) exceeds total_orders "
                         f"({self.total_orders})")
        if self.orders_next90_ly > self.orders_365d:
            found.append(f"orders_next90_ly ({self.orders_next90_ly}) exceeds orders_365d "
                         f"({self.orders_365d}): its window lies inside the last 365 days")
        for w, n in windows:
            if n > 0 and self.days_since_last > w:
                found.append(f"orders_{w}d ({n}) must be 0: the last purchase was "
                             f"{self.days_since_last} days ago")
        return found


class RiskFilters(Request):
    bands: list[Literal["low", "medium", "high"]] | None = Field(None, max_length=3)
    tiers: Labels | None = None
    segments: Labels | None = None
    min_value_at_risk: Money | None = None
    min_clv: Money | None = None


class RiskListRequest(Request):
    top_n: TopN = 100
    filters: RiskFilters = RiskFilters()


class RiskListResponse(BaseModel):
    model_version: str
    as_of: str
    matched: int
    results: list[CustomerScore]


class RecommendRequest(Request):
    customer_ids: Ids
    k: int = Field(5, ge=0, le=50, description="products to recommend per customer")
    channel: Channel | None = Field(None, description="only offers on this channel; default: "
                                                      "the cheapest consented channel per offer")
    campaign_id: Id | None = Field(
        None, description="the campaign this is for: its control group, and an `assigned` row "
                          "per customer in the campaign log; without one, nothing is logged")


class OfferChoice(BaseModel):
    offer_id: str
    kind: str
    channel: str
    expected_incremental_value: float
    expected_cost: float
    net_value: float
    p_response_with_contact: float
    p_response_without_contact: float
    source: Literal["prior", "uplift"]
    reason: str


class ProductChoice(BaseModel):
    product_id: str
    score: float
    reason: str


class Recommendation(BaseModel):
    customer_id: str
    status: Literal["ok", "control", "unknown_customer", "no_consent", "contact_capped",
                    "no_offer"]
    arm: Literal["treatment", "control"] | None = None
    offers: list[OfferChoice] = Field(default_factory=list)
    products: list[ProductChoice] = Field(default_factory=list)
    reason: str = ""


class RecommendResponse(BaseModel):
    campaign_id: str = Field(description="the campaign named by the request; empty when it "
                                         "named none (nothing was logged)")
    catalogue_version: str | None
    model_version: str
    results: list[Recommendation]


class FeedbackEvent(Request):
    event: EngineEvent
    event_id: Id | None = Field(None, description="the event's own id: a retry with the same "
                                                  "id is written once (default: the event's "
                                                  "fields and `at` make its key)")
    customer_id: Id  # written to the campaign log as sent
    campaign_id: Id
    offer_id: str = Field("", max_length=128, pattern=PRINTABLE)
    channel: Channel | None = None
    revenue: Money = 0.0
    at: dt.datetime | None = Field(None, description="when it happened (default: now); "
                                                     f"from {EARLIEST.date()} to now")

    @field_validator("at")
    @classmethod
    def _plausible(cls, v: dt.datetime | None) -> dt.datetime | None:
        return None if v is None else event_time(v)


def event_time(v: dt.datetime) -> dt.datetime:
    """A reported event time as naive UTC, between EARLIEST and now (plus clock skew).

    The wall-clock time is bounded before the time zone is applied: converting a time at the
    edge of the datetime range (year 1 at +14:00, year 9999 at -14:00) would overflow."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    wall = v.replace(tzinfo=None)
    day = dt.timedelta(days=1)  # more than any UTC offset
    if wall < EARLIEST - day:
        raise ValueError(f"is before {EARLIEST.date()}")
    if wall > now + FUTURE_SLACK + day:
        raise ValueError("is in the future")
    naive = v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else wall
    if naive < EARLIEST:
        raise ValueError(f"is before {EARLIEST.date()}")
    if naive > now + FUTURE_SLACK:
        raise ValueError("is in the future")
    return naive


class FeedbackResponse(BaseModel):
    written: int


class Metadata(BaseModel):
    service: str
    model_name: str
    model_version: str
    model_run_id: str
    features_version: str
    as_of: str
    customers: int
    catalogue_version: str | None
    uplift_version: str | None
    uplift_offers: list[str]
    recommender: bool
    loaded_at: str
    reloads: int
    reload_errors: int

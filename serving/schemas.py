"""Request and answer payloads of the service (pydantic; they make its OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from features.campaign_log import EngineEvent
from features.contract import Channel

MAX_IDS = 1000


Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"\S")]
Ids = Annotated[list[Id], Field(min_length=1, max_length=MAX_IDS)]
TopN = Annotated[int, Field(ge=1, le=10_000)]

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
    reasons_raising: list[str] = Field(default_factory=list)
    reasons_lowering: list[str] = Field(default_factory=list)
    horizon_days: int | None = None
    as_of: str | None = None
    model_version: str | None = None


class ScoreResponse(BaseModel):
    model_version: str
    as_of: str
    results: list[CustomerScore]


class FeatureRow(BaseModel):
    """One customer's features as `features build` writes them (what-if or brand-new)."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=128)
    as_of: dt.date | None = None
    frequency: int = Field(ge=0, le=100_000)
    recency: int = Field(ge=0, le=100_000)
    T: int = Field(ge=0, le=100_000)
    monetary_value: float = Field(ge=0, le=1e9)
    days_since_last: int = Field(ge=0, le=100_000)
    tenure_days: int = Field(ge=0, le=100_000)
    orders_30d: int = Field(0, ge=0, le=100_000)
    orders_90d: int = Field(0, ge=0, le=100_000)
    orders_180d: int = Field(0, ge=0, le=100_000)
    orders_365d: int = Field(0, ge=0, le=100_000)
    spend_30d: float = Field(0.0, ge=-1e9, le=1e9)  # net of refunds
    spend_90d: float = Field(0.0, ge=-1e9, le=1e9)  # net of refunds
    spend_180d: float = Field(0.0, ge=-1e9, le=1e9)  # net of refunds
    spend_365d: float = Field(0.0, ge=-1e9, le=1e9)  # net of refunds
    total_orders: int = Field(ge=1, le=1_000_000)
    total_spend: float = Field(ge=-1e10, le=1e10)  # net of refunds
    avg_order_value: float = Field(ge=0, le=1e9)
    basket_size: float = Field(1.0, ge=0, le=1e5)
    distinct_products: int = Field(1, ge=0, le=1_000_000)
    gap_mean: float | None = Field(None, ge=0, le=100_000)
    gap_std: float | None = Field(None, ge=0, le=100_000)
    overdue_ratio: float | None = Field(None, ge=0, le=100_000)
    trend_90d: float | None = Field(None, ge=-1, le=1e6)
    return_rate: float = Field(0.0, ge=0, le=1)
    r_score: int = Field(3, ge=1, le=5)
    f_score: int = Field(3, ge=1, le=5)
    m_score: int = Field(3, ge=1, le=5)
    orders_next90_ly: int = Field(0, ge=0, le=100_000)
    spend_next90_ly: float = Field(0.0, ge=-1e9, le=1e9)  # net of refunds

    @model_validator(mode="after")
    def _consistent(self) -> FeatureRow:
        if self.recency > self.T:
            raise ValueError(f"recency ({self.recency}) exceeds T ({self.T})")
        if self.frequency == 0 and self.recency != 0:
            raise ValueError("recency must be 0 when frequency is 0 (no repeat purchase)")
        if self.days_since_last > self.tenure_days:
            raise ValueError(f"days_since_last ({self.days_since_last}) exceeds tenure_days "
                             f"({self.tenure_days})")
        return self


class RiskFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bands: list[Literal["low", "medium", "high"]] | None = None
    tiers: list[str] | None = None
    segments: list[str] | None = None
    min_value_at_risk: float | None = Field(None, ge=0)
    min_clv: float | None = Field(None, ge=0)


class RiskListRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_n: TopN = 100
    filters: RiskFilters = RiskFilters()


class RiskListResponse(BaseModel):
    model_version: str
    as_of: str
    matched: int
    results: list[CustomerScore]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_ids: Ids
    k: int = Field(5, ge=0, le=50, description="products to recommend per customer")
    channel: Channel | None = Field(None, description="only offers on this channel; default: "
                                                      "the cheapest consented channel per offer")
    campaign_id: Id = "default"


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
    campaign_id: str
    catalogue_version: str | None
    model_version: str
    results: list[Recommendation]


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: EngineEvent
    customer_id: str = Field(min_length=1, max_length=128)
    campaign_id: str = Field(min_length=1, max_length=128)
    offer_id: str = Field("", max_length=128)
    channel: Channel | None = None
    revenue: float = Field(0.0, ge=0, le=1e9)
    at: dt.datetime | None = Field(None, description="when it happened (default: now)")

    @field_validator("at")
    @classmethod
    def _not_future(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is None:
            return v
        naive = v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo else v
        if naive > dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1):
            raise ValueError("is in the future")
        if naive.year < 2000:
            raise ValueError("is before 2000")
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

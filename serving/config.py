"""Service configuration: one YAML file (pydantic-validated) named by $RETENTION_SERVE_CONFIG.

`retention serve` writes it from its options; `bentoml serve serving.service:Retention` reads
the same variable, so both start the same service.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.errors import DataError, config_error
from features.home import campaign_log_url

ENV = "RETENTION_SERVE_CONFIG"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")
SCORE_STORE_SCHEMES = REDIS_SCHEMES + POSTGRES_SCHEMES
API_KEY_ENV = "RETENTION_API_KEY"


class RiskBands(BaseModel):
    """Churn-probability thresholds of the bands (calibrated, so they read as odds)."""

    model_config = ConfigDict(extra="forbid")
    high: float = Field(0.6, gt=0, lt=1)
    medium: float = Field(0.3, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> RiskBands:
        if self.medium >= self.high:
            raise ValueError("risk_bands: medium must be below high")
        return self

    def band(self, p: float) -> str:
        return "high" if p >= self.high else "medium" if p >= self.medium else "low"


class ServeConfig(BaseModel):
    """Where the service finds its model, features, offers, consent and campaign log."""

    model_config = ConfigDict(extra="forbid")
    features: Path | None = Field(
        None, description="Feature table written by `features build` (latest as_of is served); "
                          "with a Redis store, only used by `retention features publish`.")
    store: str = Field("memory", description="'memory' (in-process, from `features`) or a "
                                             "redis:// URL shared by replicas")
    scores: str | None = Field(None, description="redis:// or postgresql:// URL of published "
                               "scores (`retention score --publish`): /score and /risk_list "
                               "answer from it, nothing is scored at start; default: score the "
                               "snapshot in-process")
    tracking_uri: str | None = Field(None, description="MLflow URI; default $MLFLOW_TRACKING_URI "
                                                       "or mlruns/ in the state home")
    model_alias: str = "champion"
    offers: Path | None = Field(None, description="Offer catalogue YAML")
    customers: Path | None = Field(None, description="Source config of the customers table "
                                                     "(consent_<channel> columns)")
    campaign_log: str = Field(default_factory=campaign_log_url,
                              description="SQLAlchemy URL of the campaign log (/feedback sink); "
                                          "default data/campaign_log.db in the state home")
    api_key: str | None = Field(None, description=f"API key; ${API_KEY_ENV} overrides")
    max_ids: int = Field(1000, ge=1, description="Most customer ids or rows in one request")
    max_body_bytes: int = Field(2_000_000, ge=1024)
    log_rows_per_second: float = Field(200.0, gt=0, description="Campaign-log rows (feedback "
                                       "events, assignments) a worker writes per second at most")
    log_rows_burst: int = Field(5000, ge=1000, description="Rows a worker may write at once "
                                "before `log_rows_per_second` applies (>= the most ids or "
                                "events in one request)")
    reload_seconds: float = Field(5.0, gt=0, description="How often to look for a new champion "
                                                         "or feature snapshot")
    max_in_flight: int = Field(32, ge=1, description="Requests a worker handles at once (health "
                               "checks aside); past it a request is answered 503 with "
                               "Retry-After at once instead of waiting in a queue")
    retry_after_seconds: int = Field(1, ge=1, le=3600, description="Retry-After of those 503s, "
                                     "and of any 429 or 503 whose message names no wait")
    risk_bands: RiskBands = RiskBands()
    transactions: Path | None = Field(None, description="Source config of the transactions "
                                                        "(the console's CRM metrics and spend "
                                                        "histories)")
    campaign_history: Path | None = Field(None, description="Source config of past campaigns, "
                                                            "a canonical campaign log (the "
                                                            "console's campaign results)")
    console_users: Path | None = Field(None, description="Console users file (YAML: username "
                                                         "and argon2 hash per user)")

    @model_validator(mode="after")
    def _key(self) -> ServeConfig:
        self.api_key = os.environ.get(API_KEY_ENV) or self.api_key
        if not self.api_key:
            raise ValueError(f"no API key: set api_key or ${API_KEY_ENV}")
        if self.scores is not None and not self.scores.startswith(SCORE_STORE_SCHEMES):
            raise ValueError(f"scores: {self.scores!r} is neither a redis:// nor a "
                             "postgresql:// URL")
        if self.scores is None and self.store == "memory" and self.features is None:
            raise ValueError("features: required with the in-process store")
        return self


def load_config(path: Path | None = None) -> ServeConfig:
    """Read and validate the config named by `path` or $RETENTION_SERVE_CONFIG."""
    where = path or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    if where is None:
        raise DataError(f"no service config: set ${ENV} to a YAML file (see README, Serving)")
    if not where.is_file():
        raise DataError(f"{where}: service config not found")
    raw = yaml.safe_load(where.read_text(encoding="utf-8")) or {}
    base = where.resolve().parent
    for key in ("features", "offers", "customers", "transactions", "campaign_history",
                "console_users"):
        if raw.get(key) and not Path(raw[key]).is_absolute():
            raw[key] = str(base / raw[key])
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, where) from None

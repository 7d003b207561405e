"""The console's settings: where its users, transactions and campaign logs are, and how long a
session lasts. Built from the service config (`ConsoleSettings.from_serve_config`) when the
console is mounted in the service.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serving.config import RiskBands, ServeConfig

SECRET_ENV = "RETENTION_CONSOLE_SECRET"


class ConsoleSettings(BaseModel):
    """What the console reads besides the served bundle."""

    model_config = ConfigDict(extra="forbid")
    users_file: Path | None = Field(None, description="YAML of console users and argon2 hashes")
    transactions: Path | None = Field(None, description="Source config of the transactions "
                                                        "(CRM metrics, spend history)")
    campaign_log: str | None = Field(None, description="SQLAlchemy URL of the service's "
                                                       "campaign log")
    campaign_history: Path | None = Field(None, description="Source config of past campaigns "
                                                            "(a canonical campaign log)")
    secret: str = Field(min_length=16, description="Key that signs session cookies")
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    page_size: int = Field(50, ge=10, le=500)
    warm_seconds: float = Field(5.0, ge=0, description="How often to precompute, in the "
                                                       "background, what a new bundle's pages "
                                                       "need (0: on first use only)")
    risk_bands: RiskBands = RiskBands()

    @classmethod
    def from_serve_config(cls, cfg: ServeConfig) -> ConsoleSettings:
        """Settings of the console mounted in the service run by `cfg`. The session key is
        $RETENTION_CONSOLE_SECRET, else derived from the API key, so every replica signs
        alike without another secret to distribute (the key itself never reaches a browser)."""
        secret = os.environ.get(SECRET_ENV) or hmac.new(
            (cfg.api_key or "").encode(), b"retention-console-session",
            hashlib.sha256).hexdigest()
        return cls(users_file=cfg.console_users, transactions=cfg.transactions,
                   campaign_log=cfg.campaign_log, campaign_history=cfg.campaign_history,
                   secret=secret, risk_bands=cfg.risk_bands)

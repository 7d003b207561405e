"""The BentoML service: per-customer scores, risk lists, offer recommendations and feedback.

Start with `retention serve` or `bentoml serve serving.service:Retention` (configuration from
$RETENTION_SERVE_CONFIG, see serving/config.py). Every endpoint but health and the API docs
needs the header X-API-Key (serving/middleware.py). Logs carry customer ids only, never their
attributes.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Annotated

import anyio
import bentoml
from pydantic import Field
from starlette.types import ASGIApp, Receive, Scope, Send

from features.campaign_log import CampaignLog
from features.contract import Channel
from features.csv_safe import write_csv
from serving import answers
from serving.bentoml_fixes import cancel_request_timers
from serving.config import load_config
from serving.limits import WriteBudget
from serving.microbatch import MicroBatcher
from serving.middleware import CONSOLE_PATH, CSV_PATH, Guard, admit_first
from serving.schemas import (
    MAX_IDS,
    FeatureRow,
    FeedbackEvent,
    FeedbackResponse,
    Id,
    Ids,
    Metadata,
    RecommendRequest,
    RecommendResponse,
    RiskFilters,
    RiskListRequest,
    RiskListResponse,
    ScoreResponse,
    TopN,
)
from serving.score_store import StoreUnavailable
from serving.state import Live, Served
from training.registry.names import MODEL_NAME

log = logging.getLogger("retention.serving")


class _NoPayloadInLogs(logging.Filter):
    """A client's bad request is logged as one line with the error type: pydantic's message
    would repeat the payload (customer attributes) into the server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _client_error(exc):
            record.msg = f"{record.msg} ({type(exc).__name__})"
            record.exc_info = record.exc_text = None
        return True


def _client_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    code = getattr(getattr(exc, "error_code", None), "value", 500)
    return isinstance(exc, ValidationError) or 400 <= code < 500


logging.getLogger("bentoml._internal.server.http_app").addFilter(_NoPayloadInLogs())
cancel_request_timers()
PORT = int(os.environ.get("RETENTION_PORT", "3000"))
# Worker processes, each with its own copy of the bundle: `retention serve --workers N` sets it;
# a direct `bentoml serve` runs one.
WORKERS = int(os.environ.get("RETENTION_WORKERS", "1"))


class TooManyRequests(bentoml.exceptions.BentoMLException):
    """A client over its campaign-log write budget (answered 429 with Retry-After)."""

    error_code = HTTPStatus.TOO_MANY_REQUESTS


class StoreDown(bentoml.exceptions.BentoMLException):
    """The score store cannot answer now (answered 503 with Retry-After)."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE


@contextmanager
def _from_store() -> Iterator[None]:
    """A score store that cannot be read answers 503, not 500: the request may be retried."""
    try:
        yield
    except StoreUnavailable as exc:
        log.warning("score store: %s", exc)
        raise StoreDown(f"score store unavailable, retry after a few seconds: {exc}") from None


class ModelLoading(bentoml.exceptions.BentoMLException):
    """A store-backed worker whose model is still loading after start (answered 503 with
    Retry-After): /score and /risk_list already answer from the store."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE


def _with_model(served: Served) -> Served:
    """The bundle, if it can score rows and recommend; else 503 with Retry-After."""
    if not served.model_loaded:
        raise ModelLoading("the model is still loading after the start, retry after a few "
                           "seconds")
    return served


class Unprocessable(bentoml.exceptions.BentoMLException):
    """Well-formed rows the models cannot score (answered 422)."""

    error_code = HTTPStatus.UNPROCESSABLE_ENTITY


Rows = Annotated[list[FeatureRow], Field(min_length=1, max_length=MAX_IDS)]
Events = Annotated[list[FeedbackEvent], Field(min_length=1, max_length=MAX_IDS)]


@bentoml.service(name="retention", http={"port": PORT}, traffic={"timeout": 120},
                 workers=WORKERS)
class Retention:
    """Churn risk, value and offers per customer, from the champion `customer-scorer`."""

    def __init__(self) -> None:
        self.config = load_config()
        self.campaign_log = CampaignLog(self.config.campaign_log, create=False)
        self.live = Live(self.config, campaign_log=self.campaign_log)
        self.write_budget = WriteBudget(rate=self.config.log_rows_per_second,
                                        burst=self.config.log_rows_burst)
        self.batcher = MicroBatcher(self._score_rows, max_items=self.config.max_ids)
        # The loaded models and snapshot live as long as the process: keep them out of the
        # garbage collector's full passes, which would otherwise stall requests.
        gc.collect()
        gc.freeze()

    def _score_rows(self, served, rows: list[FeatureRow], sizes: list[int]) -> list:
        return answers.score_rows(served, rows, self.config.risk_bands)

    def __is_ready__(self) -> bool:
        return self.live.current is not None

    @bentoml.api(route="/score")
    def score(self, customer_ids: Ids) -> ScoreResponse:
        """Scores of known customers by id; unknown ids answer `unknown_customer`."""
        served = self.live.current
        with _from_store():
            results = answers.score_ids(served, customer_ids)
        return ScoreResponse(model_version=served.model_version, as_of=served.as_of,
                             results=results)

    @bentoml.api(route="/score_features")
    async def score_features(self, rows: Rows) -> ScoreResponse:
        """Scores of feature rows sent by the caller (what-if, brand-new customers)."""
        served = _with_model(self.live.current)
        try:
            with _from_store():
                results = await self.batcher.submit(served, rows)
        except ValueError as exc:
            raise Unprocessable(f"rows: {exc}") from None
        return ScoreResponse(model_version=served.model_version, as_of=served.as_of,
                             results=results)

    @bentoml.api(route="/risk_list")
    def risk_list(self, top_n: TopN = 100, filters: RiskFilters | None = None
                  ) -> RiskListResponse:
        """Customers ranked by value at risk (P(churn) x CLV), after the filters."""
        req = RiskListRequest(top_n=top_n, filters=filters or RiskFilters())
        served = self.live.current
        with _from_store():
            matched, top = answers.risk_list(served, req)
        return RiskListResponse(model_version=served.model_version, as_of=served.as_of,
                                matched=matched, results=answers.risk_scores(served, top))

    @bentoml.api(route=CSV_PATH)
    def risk_list_csv(self, top_n: TopN = 100, filters: RiskFilters | None = None) -> str:
        """The same list as CSV, for a spreadsheet or a CRM import (served as an attachment,
        text that would start a spreadsheet formula quoted: features/csv_safe.py)."""
        req = RiskListRequest(top_n=top_n, filters=filters or RiskFilters())
        with _from_store():
            _, top = answers.risk_list(self.live.current, req)
        return write_csv(top.reset_index())

    @bentoml.api(route="/recommend")
    def recommend(self, customer_ids: Ids, k: Annotated[int, Field(ge=0, le=50, strict=True)] = 5,
                  channel: Channel | None = None, campaign_id: Id | None = None
                  ) -> RecommendResponse:
        """Per customer: offers ranked by expected incremental value minus cost (or none),
        and up to k products; a stable share of each campaign is held out as control. A
        request that names a campaign logs each customer's assignment (arm and offer)."""
        req = RecommendRequest(customer_ids=customer_ids, k=k, channel=channel,
                               campaign_id=campaign_id)
        served = _with_model(self.live.current)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with _from_store():
            results, assigned = answers.recommend(served, req, self.campaign_log, now)
        self._may_write(len(assigned))
        self.campaign_log.append(assigned)
        cat = served.catalogue
        return RecommendResponse(campaign_id=campaign_id or "", model_version=served.model_version,
                                 catalogue_version=cat.version if cat else None,
                                 results=results)

    @bentoml.api(route="/feedback")
    def feedback(self, events: Events) -> FeedbackResponse:
        """Campaign events (sent, opened, converted with revenue) into the campaign log."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        rows = [e.model_dump() for e in events]  # `at` as sent: a retry has the same key
        self._may_write(len(rows))
        return FeedbackResponse(written=self.campaign_log.append(rows, received_at=now))

    def _may_write(self, rows: int) -> None:
        """Refuse (429) a request whose campaign-log rows exceed this worker's write budget."""
        wait = self.write_budget.take(rows) if rows else 0.0
        if wait:
            raise TooManyRequests(
                f"campaign-log write limit reached ({self.config.log_rows_per_second:g} rows/s, "
                f"{self.config.log_rows_burst} at once): retry after {math.ceil(wait)} s")

    @bentoml.api(route="/metadata")
    def metadata(self) -> Metadata:
        """Model and feature versions being served, and the offer catalogue's version."""
        s = self.live.current
        return Metadata(service="retention", model_name=MODEL_NAME,
                        model_version=s.model_version, model_run_id=s.model_run_id,
                        features_version=s.features_version, as_of=s.as_of,
                        customers=s.customers,
                        catalogue_version=s.catalogue.version if s.catalogue else None,
                        uplift_version=s.uplift_version, uplift_offers=list(s.uplift_offers),
                        recommender=s.recommender is not None, loaded_at=s.loaded_at,
                        reloads=self.live.reloads, reload_errors=self.live.reload_errors)


def _guard() -> None:
    cfg = load_config()
    Retention.add_asgi_middleware(Guard, api_key=cfg.api_key or "",
                                  max_body_bytes=cfg.max_body_bytes,
                                  api_routes=[api.route for api in Retention.apis.values()],
                                  retry_after=cfg.retry_after_seconds, readiness=_readiness)
    admit_first(cfg.max_in_flight, cfg.retry_after_seconds)


def _readiness() -> dict[str, object]:
    """`ready`, or `degraded` with the reason while a failed reload leaves the previous bundle
    serving (serving/state.py `Live.health`)."""
    return bentoml.get_current_service().live.health()


def _console() -> None:
    """The console's pages under CONSOLE_PATH, reading the bundle the API serves. With a
    score store the console is built on its first request (it imports MLflow and the model
    reports, which a store-backed worker does not need to answer the API) and reads the
    published version into memory then."""
    cfg = load_config()

    def build() -> ASGIApp:
        from serving.console import ConsoleSettings, create_console

        settings = ConsoleSettings.from_serve_config(cfg)
        if cfg.scores:  # the population is read from the store on first use, not warmed
            settings = settings.model_copy(update={"warm_seconds": 0.0})
        return create_console(lambda: bentoml.get_current_service().live.for_console(),
                              settings)

    Retention.mount_asgi_app(OnFirstUse(build) if cfg.scores else build(), path=CONSOLE_PATH)


class OnFirstUse:
    """An ASGI app (without lifespan) built by `build` when its first request arrives."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    def _built(self) -> ASGIApp:
        with self._lock:
            if self._app is None:
                self._app = self._build()
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or await anyio.to_thread.run_sync(self._built)
        await app(scope, receive, send)


def _end_with_the_arbiter() -> None:
    """In a worker process: be sent SIGTERM when BentoML's arbiter, which started it and
    restarts it, dies (even by SIGKILL or the OOM killer). An orphaned worker would go on
    holding the port, so that the service could not be started again, with nothing left to
    restart it."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    if getattr(main, "name", None) != WORKER_MODULE or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


WORKER_MODULE = "_bentoml_impl.worker.service"  # what BentoML runs as each worker process
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Loads and reloads (what changed, versions, seconds) are logged at INFO; BentoML's server
# logging passes only warnings from other loggers.
log.setLevel(logging.INFO)
_end_with_the_arbiter()
if os.environ.get("RETENTION_SERVE_CONFIG"):
    _guard()
    _console()

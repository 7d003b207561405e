"""The retention console: server-rendered pages for retention teams and CRM managers.

`create_console(get_served, settings)` builds a Starlette app; the service mounts it under
/console. Pages only read: every page is a GET, and POST is for signing in and out. Every page
but the sign-in page and the static assets needs a session; without one it redirects to the
sign-in page.

Pages: overview (`/`), CRM metrics (`/crm`), risk list (`/risk`, download `/risk.csv`),
customer (`/customers/{id}`), model (`/model`, its plots under `/model/plots/{name}.png`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from features.contract import CHANNELS
from features.csv_safe import write_csv
from serving import answers
from serving.console import charts
from serving.console.auth import (
    PRE_COOKIE,
    SESSION_COOKIE,
    Session,
    Sessions,
    check_password,
    new_nonce,
    read_users,
)
from serving.console.bundle import (
    BANDS,
    SORTS,
    BundleCache,
    RiskFilter,
    filtered_positions,
    sort_order,
)
from serving.console.crm import PERIODS
from serving.console.crm_view import crm_context
from serving.console.formats import TEMPLATE_GLOBALS
from serving.console.model_run import ModelRuns
from serving.console.settings import ConsoleSettings
from serving.console.sources import ConsoleData
from serving.schemas import RecommendRequest
from serving.state import Served
from training.registry import MODEL_NAME

HERE = Path(__file__).resolve().parent
log = logging.getLogger("retention.console")
CSV_COLUMNS = ("customer_id", "risk_band", "churn_probability", "risk_percentile", "p_alive",
               "expected_purchases", "expected_spend", "expected_next_purchase", "clv",
               "clv_p10", "clv_p50", "clv_p90", "value_at_risk", "value_tier", "rfm_segment",
               "days_since_last", "reasons_raising", "reasons_lowering", "as_of")
CSV_CHUNK = 20_000
PREVIEW_CAMPAIGN = "default"

# A page: runs on a worker thread, so that its number crunching never holds up the event loop
# the service's API shares.
Handler = Callable[[Request, Session], Response]


class Console:
    """The console's state (bundle derivations, data, sessions) and its pages."""

    def __init__(self, get_served: Callable[[], Served], settings: ConsoleSettings) -> None:
        self.settings = settings
        self.cache = BundleCache(get_served)
        self.data = ConsoleData(settings.transactions, settings.campaign_log,
                                settings.campaign_history)
        self.runs = ModelRuns()
        self.sessions = Sessions(settings.secret.encode(), int(settings.session_hours * 3600))
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.globals.update(TEMPLATE_GLOBALS, channels=CHANNELS, model_name=MODEL_NAME)

    def keep_warm(self, every_seconds: float) -> None:
        """Do the once-per-bundle and once-per-period work in the background, so that the
        first page after a start or a hot reload does not wait for it."""
        while True:
            try:
                served, derived = self.cache.current()
                sort_order(served, derived, "value_at_risk", True)
                self.runs.get(served.model_run_id)
                for period in PERIODS:
                    self.data.crm(period)
                self.data.campaigns()
            except Exception as exc:  # noqa: BLE001 - e.g. the service is not up yet
                log.debug("console warm-up: %s", exc)
            time.sleep(every_seconds)

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def base(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def secure(self, request: Request) -> bool:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip()
        return request.url.scheme == "https" or proto == "https"

    def render(self, request: Request, name: str, session: Session | None, status: int = 200,
               **context: object) -> HTMLResponse:
        served = self.cache.get_served()
        context.update(base=self.base(request), session=session, served=served,
                       csrf=self.sessions.csrf(session.nonce) if session else "",
                       path=request.url.path)
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        return response

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session: without one, a redirect to the sign-in page."""

        async def endpoint(request: Request) -> Response:
            session = self.sessions.read(request.cookies.get(SESSION_COOKIE))
            if session is None:
                target = request.url.path.removeprefix(self.base(request)) or "/"
                if request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse(f"{self.base(request)}/signin?next={quote(target)}",
                                        status_code=303)
            return await run_in_threadpool(handler, request, session)

        return endpoint

    # ------------------------------------------------------------------ sign in / out
    async def signin_form(self, request: Request) -> Response:
        nonce = request.cookies.get(PRE_COOKIE) or new_nonce()
        return self._signin_page(request, nonce, error="")

    def _signin_page(self, request: Request, nonce: str, error: str,
                     status: int = 200) -> Response:
        nxt = request.query_params.get("next", "")
        response = self.templates.TemplateResponse(
            request, "signin.html", {"base": self.base(request), "error": error,
                                     "csrf": self.sessions.csrf(nonce), "next": _safe_next(nxt)},
            status_code=status)
        response.set_cookie(PRE_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict",
                            secure=self.secure(request), path=self.base(request) or "/")
        return response

    async def signin(self, request: Request) -> Response:
        form = await request.form()
        nonce = request.cookies.get(PRE_COOKIE)
        if not self.sessions.csrf_ok(nonce, str(form.get("csrf", ""))):
            return self._signin_page(request, new_nonce(),
                                     "The form expired: please sign in again.", 400)
        user, password = str(form.get("username", "")), str(form.get("password", ""))
        users = read_users(self.settings.users_file)
        if not await run_in_threadpool(check_password, users, user, password):
            return self._signin_page(request, nonce, "Wrong user name or password.", 401)
        cookie, _ = self.sessions.issue(user)
        target = _safe_next(str(form.get("next", ""))) or "/"
        response = RedirectResponse(self.base(request) + target, status_code=303)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=self.sessions.max_age,
                            httponly=True, samesite="strict", secure=self.secure(request),
                            path=self.base(request) or "/")
        response.delete_cookie(PRE_COOKIE, path=self.base(request) or "/")
        return response

    async def signout(self, request: Request) -> Response:
        session = self.sessions.read(request.cookies.get(SESSION_COOKIE))
        form = await request.form()
        if session is None or not self.sessions.csrf_ok(session.nonce,
                                                        str(form.get("csrf", ""))):
            raise HTTPException(400, "bad or missing form token")
        self.sessions.revoke(session)
        response = RedirectResponse(f"{self.base(request)}/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=self.base(request) or "/")
        return response

    # ------------------------------------------------------------------ pages
    def overview(self, request: Request, session: Session) -> Response:
        served, derived = self.cache.current()
        o = derived.overview
        run = self.runs.get(served.model_run_id)
        tier_series = [charts.Series(t, derived.overview["seg_tier"][t].tolist(), f"tier-{t}")
                       for t in derived.tiers]
        seg_chart = charts.hbar_stacked(
            "Value at risk by RFM segment and value tier", list(o["seg_tier"].index),
            tier_series, fmt=charts.number, unit="value at risk (currency)")
        lorenz = charts.lorenz("Share of customer value held by the most valuable customers",
                               *o["lorenz"])
        band_series = [charts.Series(b, [float(o["band_tier"].loc[b, t]) for t in derived.tiers],
                                     f"band-{b}") for b in BANDS]
        band_chart = charts.hbar_stacked("Customers by value tier and risk band",
                                         list(derived.tiers), band_series, unit="customers")
        return self.render(request, "overview.html", session, o=o, derived=derived, run=run,
                           seg_chart=seg_chart, lorenz=lorenz, band_chart=band_chart,
                           bands=BANDS)

    def crm(self, request: Request, session: Session) -> Response:
        period = request.query_params.get("period", "month")
        if period not in PERIODS:
            period = "month"
        found = self.data.crm(period)  # type: ignore[arg-type]
        context = crm_context(found["metrics"] if found else None,
                              found["cohorts"] if found else None, self.data.campaigns(),
                              period)  # type: ignore[arg-type]
        return self.render(request, "crm.html", session, found=found, **context)

    def _filters(self, request: Request) -> RiskFilter:
        q = request.query_params

        def floor(name: str) -> float | None:
            try:
                v = float(q.get(name, "") or "nan")
            except ValueError:
                return None
            return v if math.isfinite(v) else None

        sort = q.get("sort", "value_at_risk")
        return RiskFilter(bands=tuple(q.getlist("band")), tiers=tuple(q.getlist("tier")),
                          segments=tuple(q.getlist("segment")),
                          min_value_at_risk=floor("min_var"), min_clv=floor("min_clv"),
                          sort=sort if sort in SORTS else "value_at_risk",
                          descending=q.get("dir", "desc") != "asc")

    def risk(self, request: Request, session: Session) -> Response:
        served, derived = self.cache.current()
        f = self._filters(request)
        positions = filtered_positions(served, derived, f)
        size = self.settings.page_size
        pages = max(1, math.ceil(len(positions) / size))
        try:
            page = min(max(int(request.query_params.get("page", "1")), 1), pages)
        except ValueError:
            page = 1
        shown = positions[(page - 1) * size: page * size]
        rows = served.scores.iloc[shown]
        records = []
        for cid, r in zip(rows.index, rows.itertuples(index=False), strict=True):
            reasons = [x for x in str(r.reasons_raising or "").split("; ") if x][:2]
            records.append({"id": str(cid), "band": r.risk_band, "churn": r.churn_probability,
                            "percentile": r.risk_percentile, "p_alive": r.p_alive,
                            "clv": r.clv, "var": r.value_at_risk, "tier": r.value_tier,
                            "segment": r.rfm_segment, "days": r.days_since_last,
                            "reasons": reasons})
        query = _query(request, drop=("page",))
        return self.render(request, "risk.html", session, f=f, rows=records, page=page,
                           pages=pages, matched=len(positions), total=len(served.scores),
                           first=(page - 1) * size + 1 if len(positions) else 0,
                           last=(page - 1) * size + len(shown), query=query, sorts=SORTS,
                           derived=derived, bands=BANDS, csv_query=_query(request,
                                                                           drop=("page",)))

    def risk_csv(self, request: Request, session: Session) -> Response:
        served, derived = self.cache.current()
        positions = filtered_positions(served, derived, self._filters(request))
        stamp = f"{served.as_of}-v{served.model_version}"
        return StreamingResponse(_csv_chunks(served, positions), media_type="text/csv",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="risk-list-{stamp}.csv"'})

    def customer(self, request: Request, session: Session) -> Response:
        served = self.cache.get_served()
        cid = request.path_params["customer_id"]
        score = answers.score_ids(served, [cid])[0]
        if score.status != "ok":
            return self.render(request, "not_found.html", session, status=404,
                               what=f"No customer {cid!r} in the served snapshot "
                                    f"(as_of {served.as_of}).")
        history = self.data.spend_history(cid, served.as_of)
        spend_chart = None
        if history is not None:
            spend_chart = charts.bar_chart(
                "Net spend per month, last 24 months before the snapshot",
                [str(p) for p in history.index], history.astype(float).tolist(), "s-spend",
                unit="net spend (currency)", name="net spend", width=1200)
        consent = served.consent.loc[cid] if cid in served.consent.index else None
        consents = {ch: bool(consent[ch]) if consent is not None and ch in consent else False
                    for ch in CHANNELS}
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        req = RecommendRequest(customer_ids=[cid], k=5, campaign_id=PREVIEW_CAMPAIGN)
        rec = answers.recommend(served, req, self.data.log, now)[0][0]  # assignments not logged
        row = served.scores.loc[cid]
        clv_chart = charts.range_bar(*(math.nan if v is None else float(v) for v in (
            score.clv_p10, score.clv_p50, score.clv_p90, score.clv)))
        return self.render(request, "customer.html", session, s=score, row=row,
                           spend_chart=spend_chart, consents=consents, rec=rec,
                           contacts=self.data.contacts(cid), clv_chart=clv_chart,
                           campaign=PREVIEW_CAMPAIGN)

    def model(self, request: Request, session: Session) -> Response:
        served = self.cache.get_served()
        run = self.runs.get(served.model_run_id)
        return self.render(request, "model.html", session, run=run)

    def plot(self, request: Request, session: Session) -> Response:
        served = self.cache.get_served()
        run = self.runs.get(served.model_run_id)
        path = run.plots.get(request.path_params["name"])
        if path is None:
            raise HTTPException(404)
        return FileResponse(path, media_type="image/png",
                            headers={"Cache-Control": "private, max-age=3600"})

    async def not_found(self, request: Request, exc: Exception) -> Response:
        session = self.sessions.read(request.cookies.get(SESSION_COOKIE))
        status = getattr(exc, "status_code", 404)
        if session is None and status == 404:
            return RedirectResponse(f"{self.base(request)}/signin", status_code=303)
        if status != 404:
            return HTMLResponse(f"<h1>{status}</h1><p>{getattr(exc, 'detail', '')}</p>",
                                status_code=status)
        return self.render(request, "not_found.html", session, status=404,
                           what="There is no such page in the console.")


def _safe_next(target: str) -> str:
    """A same-console path to go to after signing in (never another site)."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _query(request: Request, drop: tuple[str, ...] = ()) -> str:
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in drop]
    return urlencode(items)


def _csv_chunks(served: Served, positions: np.ndarray) -> Iterator[str]:
    columns = [c for c in CSV_COLUMNS if c == "customer_id" or c in served.scores.columns]
    for start in range(0, max(len(positions), 1), CSV_CHUNK):
        part = served.scores.iloc[positions[start:start + CSV_CHUNK]].reset_index()
        text = write_csv(part[columns].assign(model_version=served.model_version)) or ""
        yield text if start == 0 else text.split("\n", 1)[1]


def create_console(get_served: Callable[[], Served], settings: ConsoleSettings) -> Starlette:
    """The console as an ASGI app; `get_served` returns the bundle being served now (it is
    called per request, so a hot reload shows on the next page)."""
    c = Console(get_served, settings)
    if settings.warm_seconds:
        threading.Thread(target=c.keep_warm, args=(settings.warm_seconds,),
                         name="console-warm-up", daemon=True).start()

    async def security_headers(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
            "style-src 'self'; script-src 'none'; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith(f"{c.base(request)}/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers["Server-Timing"] = f"page;dur={1000 * (time.perf_counter() - started):.1f}"
        return response

    routes = [
        Route("/signin", c.signin_form, methods=["GET"]),
        Route("/signin", c.signin, methods=["POST"]),
        Route("/signout", c.signout, methods=["POST"]),
        Route("/", c.page(c.overview), methods=["GET"]),
        Route("/crm", c.page(c.crm), methods=["GET"]),
        Route("/risk", c.page(c.risk), methods=["GET"]),
        Route("/risk.csv", c.page(c.risk_csv), methods=["GET"]),
        Route("/customers/{customer_id:path}", c.page(c.customer), methods=["GET"]),
        Route("/model", c.page(c.model), methods=["GET"]),
        Route("/model/plots/{name}.png", c.page(c.plot), methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    app = Starlette(routes=routes, exception_handlers={404: c.not_found, 400: c.not_found,
                                                       405: c.not_found},
                    middleware=[Middleware(BaseHTTPMiddleware, dispatch=security_headers)])
    app.state.console = c
    return app

"""ASGI middleware in front of every endpoint: API key, request size, a bound on the requests
in flight, one error shape, and the OpenAPI document that says so.

Errors always answer `{"error": "<one line>", "detail": "<text>"}` (`ErrorBody`), whoever
raised them: BentoML's validation errors (400 with a list of pydantic errors, rewritten to 422
with the field names in the one-line message), its other errors, and Starlette's plain-text 404
and 405. Open paths (health and the Swagger UI with its assets) are matched exactly; every other
path, `/metrics` included, needs exactly one `X-API-Key` header with the key.

Overload is refused, not queued: past `max_in_flight` requests in a worker, the next one is
answered 503 at once by `Admission`, which runs outside every other layer (`admit_first`). Every
429 and 503 carries `Retry-After` (seconds): the wait its message names as "retry after N s"
(an endpoint's rate limit says so), else the configured default.
`/readyz` answers 200 with `{"status": "ready" | "degraded", ...}` (degraded: the last reload
failed and the previous bundle still serves); the reason and versions only with the key. A
store-backed worker is ready once /score and /risk_list answer from the store; `model_loaded`
says whether /score_features and /recommend answer yet (503 with Retry-After until then).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.limits import REBUILD
from serving.schemas import ErrorBody

log = logging.getLogger("retention.serving")
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
DOCS_PATHS = frozenset({"/", "/docs", "/docs.json"})
KEY_HEADER = "X-API-Key"
# The console's pages: people sign in there; the API key is never typed into a browser.
CONSOLE_PATH = "/console"
SECURITY_SCHEME = {"apiKey": {"type": "apiKey", "in": "header", "name": KEY_HEADER}}
CSV_PATH = "/risk_list.csv"
ERROR_STATUSES = {401: "missing or wrong API key (header X-API-Key)",
                  413: "request body over the size limit",
                  415: "body is not JSON (Content-Type must be application/json)",
                  422: "invalid request: the message names the field",
                  500: "unexpected server fault (see the server log)",
                  503: "busy (too many requests in flight) or not ready: retry after the "
                       "Retry-After header's seconds"}
RETRY_STATUSES = frozenset({429, 503})
# How an error message names its wait ("... retry after 3 s"): Retry-After takes it.
RETRY_IN_MESSAGE = re.compile(r"retry after (\d{1,6}) ?s\b", re.I)


def error(status: int, message: str, detail: str = "",
          headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=message, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def docs_assets() -> frozenset[str]:
    """The files BentoML serves for its Swagger UI (`/static_content/<name>`), by exact path."""
    try:
        from bentoml._internal import server
    except ImportError:
        return frozenset()
    folder = Path(server.__file__).parent / "static_content"
    return frozenset(f"/static_content/{p.name}" for p in folder.iterdir() if p.is_file())


def _one_line(body: dict) -> tuple[str, str]:
    items = body.get("detail")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        parts = []
        for item in items[:5]:
            loc = ".".join(str(p) for p in item.get("loc", ())) or "body"
            parts.append(f"{loc}: {item.get('msg', 'invalid')}")
        more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
        message = "invalid request: " + "; ".join(parts) + more
        return " ".join(message.split()), json.dumps(items)[:2000]
    return " ".join(str(body.get("error", "invalid request")).split()), str(items or "")


class Guard:
    """API key on every path but health and docs; 413 past `max_body_bytes`; 415 for a body
    that is not JSON on an endpoint; every error in the one JSON shape, 429 and 503 with
    Retry-After; `/readyz` with the service's state from `readiness`; the OpenAPI document
    completed with the key, the error answers and what each body requires."""

    def __init__(self, app: ASGIApp, api_key: str, max_body_bytes: int,
                 api_routes: Iterable[str] = (), retry_after: int = 1,
                 readiness: Callable[[], dict[str, object]] | None = None) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.max_body_bytes = max_body_bytes
        self.api_routes = frozenset(api_routes)
        self.open_paths = HEALTH_PATHS | DOCS_PATHS | docs_assets()
        self.retry_after = retry_after
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/"):
            await self.app(scope, receive, send)  # pages for people: their own sign-in
            return
        headers = scope.get("headers") or []
        authorised = self._authorised(headers)
        if path not in self.open_paths and not authorised:
            await error(401, f"missing or wrong API key (header {KEY_HEADER})")(
                scope, receive, send)
            return
        if path == "/docs":
            await RedirectResponse("/")(scope, receive, send)
            return
        found = dict(headers)
        length = found.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await error(413, f"request body of {int(length)} bytes exceeds the limit of "
                             f"{self.max_body_bytes}")(scope, receive, send)
            return
        if length is None and method in ("POST", "PUT", "PATCH"):
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > self.max_body_bytes:
                    await error(413, f"request body exceeds the limit of "
                                     f"{self.max_body_bytes} bytes")(scope, receive, send)
                    return
                if not message.get("more_body"):
                    break
            receive = _replay(body)
            length = str(len(body)).encode()
        if path in self.api_routes and method == "POST":
            kind = found.get(b"content-type", b"").split(b";")[0].strip().lower()
            empty = length in (None, b"0")
            if kind != b"application/json" and (kind or not empty):
                await error(415, "send JSON: Content-Type must be application/json")(
                    scope, receive, send)
                return
        await self.app(scope, receive, self._shaped(send, path, method, authorised))

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Exactly one key header, compared in constant time (two keys are refused: a proxy
        and the client might each have added one)."""
        given = [v for k, v in headers if k.lower() == b"x-api-key"]
        return len(given) == 1 and hmac.compare_digest(given[0], self.api_key)

    def _shaped(self, send: Send, path: str, method: str, authorised: bool) -> Send:
        held: dict = {}
        routes = self.api_routes

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                docs = path == "/docs.json" and method == "GET" and status == 200
                ready = path == "/readyz" and method == "GET" and status == 200
                if docs or ready or (status >= 400 and method != "HEAD"):
                    held["start"], held["body"] = message, b""
                    return
                if path == CSV_PATH and status == 200:
                    message = _with_csv_headers(message)
                if status in RETRY_STATUSES:
                    message = _with_retry_after(message, b"", self.retry_after)
            if held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                start, body = held["start"], held["body"]
                held.clear()
                if start["status"] == 200 and path == "/readyz":
                    body = self._readiness_body(authorised) or body
                    start = _with_body_headers(start, body, b"application/json")
                elif start["status"] == 200:
                    body = json.dumps(document(json.loads(body), routes)).encode()
                    start = _with_body_headers(start, body, b"application/json")
                else:
                    start, body = _reshape(start, body)
                    if start["status"] in RETRY_STATUSES:
                        start = _with_retry_after(start, body, self.retry_after)
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        return wrapped

    def _readiness_body(self, authorised: bool) -> bytes:
        """`{"status": "ready" | "degraded"}`, with the reason and versions for the key's
        holders; empty when the service cannot say (not instantiated yet)."""
        if self.readiness is None:
            return b""
        try:
            state = self.readiness()
        except Exception:  # noqa: BLE001 - BentoML's own answer stands
            return b""
        shown = state if authorised else {"status": state.get("status")}
        return json.dumps(shown).encode()


class Admission:
    """At most `max_in_flight` requests at once in this worker (health checks aside); the next
    is answered 503 at once, never queued, with the JSON error shape and `Retry-After`. The
    connection is kept: closing it would make every refused client connect again, which costs
    the flooded worker more than the refusal. Refusals are logged as one warning per
    REPORT_SECONDS at most, with their count so far."""

    REPORT_SECONDS = 10.0

    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after: int = 1) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # one event loop per worker: no lock needed
        self.refused = 0
        self._reported = -self.REPORT_SECONDS
        body = ErrorBody(error=f"busy: {max_in_flight} requests in flight in this worker (its "
                               f"max_in_flight); retry after {retry_after} s",
                         detail="overload is refused rather than queued").model_dump_json()
        self._start: Message = {"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"retry-after", b"%d" % retry_after)]}
        self._body: Message = {"type": "http.response.body", "body": body.encode()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        limit = self.max_in_flight * REBUILD.factor()
        if self.in_flight >= limit:
            self.refused += 1
            self._report()
            await send(self._start)
            await send(self._body)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _report(self) -> None:
        """One warning when refusals start, then at most one per REPORT_SECONDS."""
        now = time.monotonic()
        if now - self._reported >= self.REPORT_SECONDS:
            log.warning("busy: %d requests in flight (max_in_flight); %d refused with 503 since "
                        "the worker started", self.max_in_flight, self.refused)
            self._reported = now


def admit_first(max_in_flight: int, retry_after: int) -> bool:
    """Wrap the ASGI app BentoML builds for the service in `Admission`, outside its tracing,
    metrics, access-log and timeout layers and `Guard`: a refused request then costs about what
    uvicorn spends on it, a small part of what the whole stack spends on its cheapest answer,
    so a flooded worker keeps its time for the requests it admitted. False if this BentoML
    builds its app elsewhere (nothing patched)."""
    try:
        from _bentoml_impl.server.app import ServiceAppFactory
    except ImportError:
        return False
    build = getattr(ServiceAppFactory.__call__, "_builds", ServiceAppFactory.__call__)

    def __call__(self) -> ASGIApp:
        return Admission(build(self), max_in_flight, retry_after)

    __call__._builds = build  # type: ignore[attr-defined]
    ServiceAppFactory.__call__ = __call__
    return True


def _with_retry_after(start: Message, body: bytes, default: int) -> Message:
    """A 429 or 503 with `Retry-After`: kept if the endpoint set one, else the seconds its
    error message names ("retry after N s"), else `default`."""
    headers = list(start.get("headers", []))
    if any(k.lower() == b"retry-after" for k, _ in headers):
        return start
    found = RETRY_IN_MESSAGE.search(body.decode("utf-8", "replace"))
    seconds = max(int(found.group(1)), 1) if found else default
    return {**start, "headers": [*headers, (b"retry-after", str(seconds).encode())]}


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _with_body_headers(start: Message, body: bytes, kind: bytes) -> Message:
    drop = (b"content-length", b"content-type")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in drop]
    headers += [(b"content-length", str(len(body)).encode()), (b"content-type", kind)]
    return {**start, "headers": headers}


def _with_csv_headers(start: Message) -> Message:
    drop = (b"content-type", b"content-disposition")
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in drop]
    headers += [(b"content-type", b"text/csv; charset=utf-8"),
                (b"content-disposition", b'attachment; filename="risk_list.csv"')]
    return {**start, "headers": headers}


def _reshape(start: Message, body: bytes) -> tuple[Message, bytes]:
    """Any error answer into `ErrorBody`: JSON errors keep their message (validation errors
    become 422), plain-text ones (Starlette's 404 and 405) become the message."""
    status = start["status"]
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {"error": body.decode("utf-8", "replace")[:200] or str(status)}
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        parsed = {"error": str(status), "detail": json.dumps(parsed)[:2000]}
    message, detail = _one_line(parsed)
    if status == 400 and "validation error" in str(parsed.get("error", "")):
        status = 422
    if status == 404:
        message = "no such endpoint (see /docs.json)"
    elif status == 405:
        allowed = dict(start.get("headers", [])).get(b"allow", b"").decode()
        message = f"method not allowed{f' (allowed: {allowed})' if allowed else ''}"
    new = ErrorBody(error=message, detail=detail).model_dump_json().encode()
    return {**_with_body_headers(start, new, b"application/json"), "status": status}, new


RETRY_AFTER_HEADER = {"description": "seconds to wait before trying again",
                      "schema": {"type": "integer", "minimum": 1}}
READYZ_ANSWER = {
    "description": "ready; `degraded` when the last reload failed and the previous model and "
                   "snapshot still answer (reason and versions shown with the API key)",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ready", "degraded"]},
                       "reason": {"type": "string", "nullable": True},
                       "failed_at": {"type": "string", "nullable": True},
                       "model_version": {"type": "string"},
                       "model_loaded": {"type": "boolean"},
                       "features_version": {"type": "string"},
                       "uplift_version": {"type": "string", "nullable": True},
                       "loaded_at": {"type": "string"},
                       "reloads": {"type": "integer"},
                       "reload_errors": {"type": "integer"}}}}}}


def _nullable_if_default_null(prop: dict) -> None:
    """BentoML flattens `X | None` request fields to `X`: say again that null is accepted."""
    if "default" not in prop or prop["default"] is not None:
        return
    if "$ref" in prop:
        prop["allOf"] = [{"$ref": prop.pop("$ref")}]
    if "enum" in prop:
        prop["enum"] = [*prop["enum"], None]
    prop["nullable"] = True


def _nullable_in_openapi_30(prop: dict) -> None:
    """pydantic writes `X | None` as anyOf [X, {type: null}], which OpenAPI 3.0 (this
    document's version) does not know: say it as X with `nullable`."""
    options = prop.get("anyOf")
    if not isinstance(options, list) or {"type": "null"} not in options:
        return
    rest = [o for o in options if o != {"type": "null"}]
    if len(rest) != 1:
        return
    del prop["anyOf"]
    if "$ref" in rest[0]:
        prop["allOf"] = rest
    else:
        prop.update(rest[0])
    prop["nullable"] = True


def document(doc: dict, api_routes: Iterable[str]) -> dict:
    """BentoML's OpenAPI document, completed: the API key as a security scheme (Swagger UI's
    Authorize button sends it), the error answers each operation can give in `ErrorBody`'s
    shape, a required body where the payload has required fields, and the CSV endpoint's
    media type. Health endpoints are declared open."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for bentoml_error in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(bentoml_error, None)
    schemas["Error"] = ErrorBody.model_json_schema()
    components["securitySchemes"] = SECURITY_SCHEME
    doc["security"] = [{"apiKey": []}]
    routes = frozenset(api_routes)

    def answer(description: str) -> dict:
        schema = {"$ref": "#/components/schemas/Error"}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    for schema in schemas.values():
        for prop in schema.get("properties", {}).values():
            _nullable_in_openapi_30(prop)
            _nullable_if_default_null(prop)
    for path, item in doc.get("paths", {}).items():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = {k: v for k, v in op["responses"].items() if str(k) == "200"}
            if path in HEALTH_PATHS:
                op["security"] = []
                if path != "/healthz":
                    responses["503"] = answer("not ready or not alive")
                if path == "/readyz":
                    responses["200"] = READYZ_ANSWER
            elif path in routes:
                responses.update({str(s): answer(d) for s, d in ERROR_STATUSES.items()})
                responses["503"]["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
                schema = body.get("schema", {})
                op.setdefault("requestBody", {})["required"] = bool(schema.get("required"))
                for prop in schema.get("properties", {}).values():
                    _nullable_if_default_null(prop)
            else:
                responses["401"] = answer(ERROR_STATUSES[401])
            if path == CSV_PATH:
                responses["200"] = {"description": "the risk list as CSV",
                                    "content": {"text/csv": {"schema": {"type": "string"}}}}
            op["responses"] = responses
    return doc

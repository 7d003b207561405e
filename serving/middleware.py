"""ASGI middleware in front of every endpoint: API key, request size, one error shape, and the
OpenAPI document that says so.

Errors always answer `{"error": "<one line>", "detail": "<text>"}` (`ErrorBody`), whoever
raised them: BentoML's validation errors (400 with a list of pydantic errors, rewritten to 422
with the field names in the one-line message), its other errors, and Starlette's plain-text 404
and 405. Open paths (health and the Swagger UI with its assets) are matched exactly; every other
path, `/metrics` included, needs exactly one `X-API-Key` header with the key.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from pathlib import Path

from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.schemas import ErrorBody

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
                  500: "unexpected server fault (see the server log)"}


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
    that is not JSON on an endpoint; every error in the one JSON shape; the OpenAPI document
    completed with the key, the error answers and what each body requires."""

    def __init__(self, app: ASGIApp, api_key: str, max_body_bytes: int,
                 api_routes: Iterable[str] = ()) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.max_body_bytes = max_body_bytes
        self.api_routes = frozenset(api_routes)
        self.open_paths = HEALTH_PATHS | DOCS_PATHS | docs_assets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/"):
            await self.app(scope, receive, send)  # pages for people: their own sign-in
            return
        headers = scope.get("headers") or []
        if path not in self.open_paths and not self._authorised(headers):
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
        await self.app(scope, receive, self._shaped(send, path, method))

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Exactly one key header, compared in constant time (two keys are refused: a proxy
        and the client might each have added one)."""
        given = [v for k, v in headers if k.lower() == b"x-api-key"]
        return len(given) == 1 and hmac.compare_digest(given[0], self.api_key)

    def _shaped(self, send: Send, path: str, method: str) -> Send:
        held: dict = {}
        routes = self.api_routes

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                docs = path == "/docs.json" and method == "GET" and status == 200
                if docs or (status >= 400 and method != "HEAD"):
                    held["start"], held["body"] = message, b""
                    return
                if path == CSV_PATH and status == 200:
                    message = _with_csv_headers(message)
            if held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                start, body = held["start"], held["body"]
                held.clear()
                if start["status"] == 200:
                    body = json.dumps(document(json.loads(body), routes)).encode()
                    start = _with_body_headers(start, body, b"application/json")
                else:
                    start, body = _reshape(start, body)
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        return wrapped


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


def _nullable_if_default_null(prop: dict) -> None:
    """BentoML flattens `X | None` request fields to `X`: say again that null is accepted."""
    if "default" not in prop or prop["default"] is not None:
        return
    if "$ref" in prop:
        prop["allOf"] = [{"$ref": prop.pop("$ref")}]
    if "enum" in prop:
        prop["enum"] = [*prop["enum"], None]
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

    for path, item in doc.get("paths", {}).items():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = {k: v for k, v in op["responses"].items() if str(k) == "200"}
            if path in HEALTH_PATHS:
                op["security"] = []
                if path != "/healthz":
                    responses["503"] = answer("not ready or not alive")
            elif path in routes:
                responses.update({str(s): answer(d) for s, d in ERROR_STATUSES.items()})
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

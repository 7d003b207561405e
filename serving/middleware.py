"""ASGI middleware in front of every endpoint: API key, request size, one error shape.

Errors always answer `{"error": "<one line>", "detail": "<text>"}`. BentoML answers a payload
that fails validation with 400 and a list of pydantic errors; it is rewritten to 422 with the
field names in the one-line message.
"""

from __future__ import annotations

import hmac
import json

from starlette.responses import JSONResponse

OPEN_PATHS = ("/healthz", "/livez", "/readyz", "/docs", "/docs.json", "/metrics", "/static_content")


def error(status: int, message: str, detail: str = "") -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status)


def _one_line(body: dict) -> tuple[str, str]:
    items = body.get("detail")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        parts = []
        for item in items[:5]:
            loc = ".".join(str(p) for p in item.get("loc", ())) or "body"
            parts.append(f"{loc}: {item.get('msg', 'invalid')}")
        more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
        return "invalid request: " + "; ".join(parts) + more, json.dumps(items)[:2000]
    return str(body.get("error", "invalid request")), str(items or "")


class Guard:
    """API key on every path but health and docs; 413 past `max_body_bytes`; error shapes."""

    def __init__(self, app, api_key: str, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        if not path.startswith(OPEN_PATHS):
            given = headers.get(b"x-api-key", b"")
            if not hmac.compare_digest(given, self.api_key):
                await error(401, "missing or wrong API key (header X-API-Key)")(
                    scope, receive, send)
                return
        if scope.get("method") == "POST":
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                await error(415, "send JSON: Content-Type must be application/json")(
                    scope, receive, send)
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await error(413, f"request body of {int(length)} bytes exceeds the limit of "
                             f"{self.max_body_bytes}")(scope, receive, send)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
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
        await self.app(scope, receive, self._shaped(send))

    def _shaped(self, send):
        held: dict = {}

        async def wrapped(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held["start"] = message
                held["body"] = b""
                return
            if held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return
                start, body = _reshape(held["start"], held["body"])
                held.clear()
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        return wrapped


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _reshape(start: dict, body: bytes) -> tuple[dict, bytes]:
    status = start["status"]
    try:
        parsed = json.loads(body)
    except ValueError:
        return start, body
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict):
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return start, body
    message, detail = _one_line(parsed)
    if status == 400 and "validation error" in str(parsed.get("error", "")):
        status = 422
    new = json.dumps({"error": message, "detail": detail}).encode()
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new)).encode()))
    return {**start, "status": status, "headers": headers}, new

"""A fix for BentoML 1.4's request timeout, applied by the service at import.

`bentoml._internal.server.http.traffic.TimeoutMiddleware` arms `loop.call_later(timeout, ...)`
for every request and never cancels it, so each answered request's context (tracing spans,
futures, the timer) stays alive for `traffic.timeout` seconds: at 200 requests/s and a 120 s
timeout, ~24k requests' objects, and full garbage collections of 100-300 ms that stall every
request in flight. The replacement below is the same middleware with the timer cancelled.
"""

from __future__ import annotations

import asyncio


def cancel_request_timers() -> bool:
    """Patch TimeoutMiddleware to cancel its timer when the request ends; False if this
    BentoML has no such middleware (nothing patched)."""
    try:
        from bentoml._internal.server.http.traffic import TimeoutMiddleware
    except ImportError:
        return False
    if getattr(TimeoutMiddleware.__call__, "_cancels_timer", False):
        return True

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if fut.cancel():
                from starlette.responses import JSONResponse

                resp = JSONResponse({"error": f"Not able to process the request in "
                                              f"{self.timeout} seconds"}, status_code=504)
                await resp(scope, receive, send)
        else:
            await fut
        finally:
            timer.cancel()

    __call__._cancels_timer = True  # type: ignore[attr-defined]
    TimeoutMiddleware.__call__ = __call__
    return True

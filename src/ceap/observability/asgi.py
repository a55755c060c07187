"""The API's instrumentation: a request counter and latency histogram by route template
and status, a server span per request (with the otel extra), and ``GET /metrics``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Response

from ceap.observability.exposition import render
from ceap.observability.metrics import HTTP_DURATION, HTTP_REQUESTS
from ceap.observability.tracing import server_span

UNMATCHED = "<unmatched>"  # a path that matches no route: never the path itself (unbounded, personal)

#: the counter's and the histogram's series of each (method, route template, status) seen:
#: ``labels()`` takes a lock and checks its values on every call; these are as bounded as
#: the series themselves
_SERIES: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    found = _SERIES.get((method, route, status))
    if found is None:
        found = _SERIES[method, route, status] = (HTTP_REQUESTS.labels(method, route, str(status)),
                                                  HTTP_DURATION.labels(method, route))
    return found


class Instrument:
    """Pure ASGI middleware (no per-request task or body copy)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        method = scope.get("method", "GET")

        async def watch(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        with server_span(f"{method} request", scope, **{"http.request.method": method}) as current:
            try:
                await self.app(scope, receive, watch)
            finally:
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                elapsed = time.perf_counter() - started
                count, duration = _series(method, route, status)
                count.inc()
                duration.observe(elapsed)
                if current is not None:
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
                    current.set_attribute("http.response.status_code", status)


def install(app: FastAPI) -> None:
    """Count and time every request, and serve ``GET /metrics`` (not in the OpenAPI description)."""
    app.add_middleware(Instrument)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus metrics of this server (of all its processes in multiprocess mode)."""
        body, content_type = render()
        return Response(body, media_type=content_type)

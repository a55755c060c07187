"""How the API answers what went wrong: validation errors without echoing the input,
``405`` with every method the path serves in ``Allow``, and a plain JSON ``500`` that
never shows a traceback (the traceback goes to the server's log)."""

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ceap.json_input import HAS_NUL, NO_NUL, NOT_UNICODE

log = logging.getLogger("ceap.api")


def printable(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (a lone surrogate) shown as an escape."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _issue(err: dict[str, Any]) -> dict[str, Any]:
    loc = [p if isinstance(p, int) else printable(str(p)) for p in err.get("loc", ())]
    kind, ctx = err.get("type"), err.get("ctx") or {}
    if kind == "string_unicode":
        msg = NOT_UNICODE
    elif kind == "string_pattern_mismatch" and ctx.get("pattern") == NO_NUL:
        msg = HAS_NUL
    elif kind == "value_error" and ctx.get("error") is not None:
        msg = printable(str(ctx["error"]))   # our own reason, without pydantic's "Value error, "
    else:
        msg = printable(str(err.get("msg", "")))
    return {"loc": loc, "msg": msg, "type": str(err.get("type", ""))}


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field and what is wrong, without the input (it may be large,
    personal, or text UTF-8 cannot carry)."""
    return JSONResponse({"detail": [_issue(e) for e in exc.errors()]}, status_code=422)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed(request: Request) -> list[str]:
    """Every method some route of this path answers (a path may have one route per method,
    and routes may sit in included routers: ask each route, method by method)."""
    routes = request.app.router.routes
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]


async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
    if exc.status_code == 405:
        allowed = _allowed(request)
        if allowed:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the client gets an id to quote, the log gets the traceback."""
    incident = uuid.uuid4().hex[:12]
    # the route template, never the path: a path names a customer
    route = getattr(request.scope.get("route"), "path", None) or "<unmatched>"
    log.error("unhandled error %s on %s %s", incident, request.method, route, exc_info=exc,
              extra={"incident": incident, "route": route})
    return JSONResponse({"detail": "internal error"}, status_code=500,
                        headers={"X-Error-Id": incident})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)

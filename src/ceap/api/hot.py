"""Lean handlers for the two hot reads: a customer's candidates and the in-app inbox.

Each sits in front of its FastAPI route, for the same path and ``GET`` only, and
answers the common request itself: a key already in this process's key cache
(``ceap.api.keycache``), active, with the ``read`` scope, and plain query parameters
(each known one at most once, non-empty, valid text, ``limit`` 1 to 100 in digits,
``unread`` ``true``/``false``/``1``/``0``). It skips FastAPI's parameter and
dependency handling (and its thread hop for the key check), reads the store and
writes the JSON straight away (a key in use is read again in the background before
its record is 2 s old, ``ceap.api.keycache``; a known key whose record went stale is
read once while its requests wait here). Anything else (no key, an unknown, revoked,
expired or unscoped key, a key the store no longer has, an odd or invalid parameter)
goes to the FastAPI route, which answers it as it always did, errors included; the
FastAPI route is also what ``/openapi.json`` describes. So both give the same
answers; the lean one only does less work for them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from ceap.api.auth import _hash, lookup
from ceap.api.keycache import cache_of

#: answers a fast request: (tenant, customer id, query parameters) -> the JSON body, or
#: None to leave the request to the FastAPI route (a parameter it must judge)
Answer = Callable[[str, str, dict[str, str]], Awaitable[bytes | None]]


def _text(value: str) -> bool:
    """Whether a parameter is text FastAPI takes as is: no NUL, valid Unicode."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def plain_query(raw: bytes, allowed: frozenset[str]) -> dict[str, str] | None:
    """The query parameters, when each is known, given once, non-empty text; else None."""
    if not raw:
        return {}
    found: dict[str, str] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name not in allowed or name in found or not value or not _text(value):
            return None
        found[name] = value
    return found


def limit_of(value: str | None, default: int) -> int | None:
    """``limit`` as plain digits from 1 to 100 (no sign, no leading zero, no spaces), else None."""
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or value[0] == "0" or len(value) > 3:
        return None
    n = int(value)
    return n if n <= 100 else None


def flag_of(value: str | None) -> bool | None:
    """A boolean parameter as ``true``/``false``/``1``/``0`` (absent: false), else None."""
    if value is None or value in ("false", "0"):
        return False
    return True if value in ("true", "1") else None


def bearer_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key of the first ``Authorization: Bearer ...`` header, as ``HTTPBearer`` reads it."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, param = value.decode("latin-1").partition(" ")
            return param.strip() if scheme.lower() == "bearer" and param.strip() else None
    return None


class LeanRoute(Route):
    """``GET`` of ``fallback``'s path: fast when it can be, else ``fallback`` itself."""

    def __init__(self, fallback: APIRoute, allowed: frozenset[str], answer: Answer, auth: bool):
        self.fallback, self.allowed, self.answer, self.auth = fallback, allowed, answer, auth
        super().__init__(fallback.path, self._serve, methods=["GET"], include_in_schema=False)
        self.methods = {"GET"}  # not HEAD: the FastAPI route answers that, as before
        self.app = self._serve  # an ASGI app: no Request object, no response class

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "GET":
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is Match.FULL:  # to metrics, traces and error handlers it is the FastAPI route
            child["route"], child["endpoint"] = self.fallback, self.fallback.endpoint
        return match, child

    async def _tenant(self, scope: Scope) -> str | None:
        app = scope["app"]
        if not self.auth:
            return str(app.state.default_tenant)
        key = bearer_key(scope["headers"])
        if key is None:
            return None
        store, digest = app.state.store, _hash(key)
        cache, load = cache_of(store), functools.partial(lookup, store, key)
        found = cache.peek(digest, load)
        if found is None and cache.known(digest):  # a key in use, its record gone stale:
            try:  # wait here for its one read rather than every request taking the slow way
                found = await asyncio.wrap_future(cache.later(digest, load))
            except Exception:  # the FastAPI route reads it again and answers
                return None
        if found is None or "read" not in found.scopes or found.status(store.clock()) != "active":
            return None
        return found.tenant_id

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        customer = scope["path_params"]["customer_id"]
        query = plain_query(scope["query_string"], self.allowed)
        tenant = await self._tenant(scope) if query is not None and _text(customer) else None
        body = await self.answer(tenant, customer, query) if tenant is not None else None  # type: ignore[arg-type]
        if body is None:
            await self.fallback.handle(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()),
                                (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def install(app: FastAPI, answers: dict[str, tuple[frozenset[str], Answer]], auth: bool) -> None:
    """Put a ``LeanRoute`` in front of each FastAPI route named in ``answers`` (path ->
    allowed query parameters and the answer)."""
    routes = app.router.routes
    for path, (allowed, answer) in answers.items():
        [fallback] = [r for r in routes if isinstance(r, APIRoute) and r.path == path
                      and r.methods == {"GET"}]
        routes.insert(0, LeanRoute(fallback, allowed, answer, auth))

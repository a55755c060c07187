"""Who is calling: the tenant of the request's API key (an HTTP bearer token), or the
default tenant when the server runs without keys. Declared as OpenAPI security schemes,
so /openapi.json says which routes need a key, and which scope (``x-required-scope``,
and the role named in each route's ``security`` requirement).

Keys are read from the store and kept in memory for at most ``CEAP_API_KEY_CACHE_SECONDS``
(2 s; ``ceap.api.keycache``): an expired key, or one revoked in this process, is refused
from the next request on; one revoked by another process, within that time."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ceap.api.auth import SCOPES, cached_lookup

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key made by `ceap apikey create` (`ceap_...`); it names the "
                                "tenant and its scopes (read, ingest, admin).")
#: Twilio's webhooks are signed instead (checked in ``callbacks``); declared so clients know
twilio_signed = APIKeyHeader(name="X-Twilio-Signature", auto_error=False, scheme_name="twilioSignature",
                             description="HMAC-SHA1 of the URL and the form, keyed with "
                                         "TWILIO_AUTH_TOKEN (see docs/api.md)")

MISSING_KEY = "missing API key (Authorization: Bearer <key>)"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _keyed(scope: str) -> Callable[..., str]:
    def keyed_tenant(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        """The tenant of the request's API key: 401 without an active key, 403 without the scope."""
        if credentials is None:
            raise _unauthorized(MISSING_KEY)
        store = request.app.state.store
        key = cached_lookup(store, credentials.credentials.strip())
        if key is None:
            raise _unauthorized("unknown API key")
        status = key.status(store.clock())
        if status != "active":
            raise _unauthorized(f"{status} API key")
        if scope not in key.scopes:
            raise HTTPException(403, f"this API key lacks the scope {scope!r} (it has: "
                                     f"{', '.join(key.scopes)})")
        request.state.api_key = key
        return key.tenant_id

    keyed_tenant.scope = scope  # type: ignore[attr-defined]
    return keyed_tenant


_KEYED = {scope: _keyed(scope) for scope in SCOPES}


async def open_tenant(request: Request) -> str:
    """No keys (``ceap serve --no-auth``): every request is the default tenant."""
    request.state.api_key = None
    return str(request.app.state.default_tenant)


def tenant_dependency(auth: bool, scope: str = "read") -> Callable[..., Any]:
    """The dependency giving a route's tenant; with ``auth``, it needs a key with ``scope``."""
    return _KEYED[scope] if auth else open_tenant


def actor(request: Request) -> str:
    """Who is calling, for the audit log: ``apikey:<id>`` (or ``no-auth`` without keys)."""
    key = getattr(request.state, "api_key", None)
    return f"apikey:{key.id}" if key is not None else "no-auth"


def client(request: Request) -> str | None:
    """From where: the client's address (as the proxy reports it, see docs/api.md)."""
    return request.client.host if request.client else None


def _scopes_of(dependant: Any) -> set[str]:
    found = {getattr(dependant.call, "scope", None)} if dependant.call is not None else set()
    for sub in dependant.dependencies:
        found |= _scopes_of(sub)
    return {s for s in found if s}


def _routes(routes: Any) -> Any:
    """Every route, those of included routers too (newer FastAPI keeps them apart)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def declare_scopes(app: FastAPI) -> None:
    """Name each keyed route's scope in /openapi.json: the role in its ``security``
    requirement (OpenAPI 3.1 allows roles for HTTP schemes), ``x-required-scope``, and a
    line of its description."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            for route in _routes(app.routes):
                scopes = _scopes_of(route.dependant) if hasattr(route, "dependant") else set()
                if len(scopes) != 1:
                    continue
                [scope] = scopes
                for method in getattr(route, "methods", ()):
                    op = doc["paths"].get(route.path_format, {}).get(method.lower())  # type: ignore[attr-defined]
                    if op is None or "security" not in op:
                        continue
                    op["security"] = [{name: [scope] for req in op["security"] for name in req}]
                    op["x-required-scope"] = scope
                    op["description"] = (op.get("description", "") + f"\n\nAPI key scope: `{scope}`.").strip()
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

"""Who is calling: the tenant of the request's API key (an HTTP bearer token), or the
default tenant when the server runs without keys. Declared as OpenAPI security schemes,
so /openapi.json says which routes need a key."""

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ceap.api.auth import tenant_of
from ceap.store.base import Store

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key made by `ceap apikey` (`ceap_...`); it names the tenant.")
#: Twilio's webhooks are signed instead (checked in ``callbacks``); declared so clients know
twilio_signed = APIKeyHeader(name="X-Twilio-Signature", auto_error=False, scheme_name="twilioSignature",
                             description="HMAC-SHA1 of the URL and the form, keyed with "
                                         "TWILIO_AUTH_TOKEN (see docs/api.md)")

MISSING_KEY = "missing API key (Authorization: Bearer <key>)"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def keyed_tenant(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The tenant of the request's API key (401 without a known key). On the event loop:
    a known key is a dict look-up, an unknown one an indexed read, either cheaper than a
    hop to the thread pool."""
    if credentials is None:
        raise _unauthorized(MISSING_KEY)
    found: str | None = request.app.state.tenant_of(credentials.credentials.strip())
    if found is None:
        raise _unauthorized("unknown API key")
    return found


async def open_tenant(request: Request) -> str:
    """No keys (``ceap serve --no-auth``): every request is the default tenant."""
    return str(request.app.state.default_tenant)


def tenant_dependency(auth: bool) -> Callable[..., Any]:
    return keyed_tenant if auth else open_tenant


class KeyCache:
    """Known keys for a minute: a new key works at once, a deleted one stops within a minute."""

    def __init__(self, store: Store, ttl: float = 60.0):
        self.store, self.ttl = store, ttl
        self._known: dict[str, tuple[str, float]] = {}

    def __call__(self, key: str) -> str | None:
        hit = self._known.get(key)
        if hit and time.monotonic() - hit[1] < self.ttl:
            return hit[0]
        tenant = tenant_of(self.store, key)
        if tenant is None:
            self._known.pop(key, None)
        else:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[key] = (tenant, time.monotonic())
        return tenant

"""Sign-in for the dashboard: an API key (``ceap apikey``) entered once in a form becomes
a signed session cookie naming its tenant; the key itself is never stored in the cookie.

An admin session (the admin actions on held deliveries) also needs the admin key, the
``CEAP_ADMIN_KEY`` environment variable of the server; without it nobody is admin.
Cookies are signed (itsdangerous) with ``CEAP_UI_SECRET``, or with a random secret
made at start-up (every session then ends when the server restarts).
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from ceap.api.auth import lookup
from ceap.model import utcnow
from ceap.store.base import Store

COOKIE = "ceap_session"
SECRET_ENV = "CEAP_UI_SECRET"
ADMIN_ENV = "CEAP_ADMIN_KEY"
#: a session lasts this long after sign-in (seconds)
MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class Session:
    tenant: str
    #: who signed in, for the audit log: ``apikey:<key id>`` as the API records it (``no-auth``
    #: without keys)
    actor: str
    admin: bool
    #: echoed by every form that changes something (with SameSite=Strict, against CSRF)
    csrf: str


class Sessions:
    """Issue and read session cookies."""

    def __init__(self, secret: str | None = None):
        self.signer = URLSafeTimedSerializer(secret or os.environ.get(SECRET_ENV) or
                                             secrets.token_urlsafe(32), salt="ceap-ui")

    def sign_in(self, store: Store, key: str, admin_key: str = "") -> Session | None:
        """A session for a known API key (None otherwise); admin when ``admin_key`` is the
        server's admin key."""
        found = lookup(store, key.strip()) if key.strip() else None
        if found is None or found.status(utcnow()) != "active":
            return None
        return Session(found.tenant_id, f"apikey:{found.id}", is_admin_key(admin_key),
                       secrets.token_urlsafe(16))

    def open_session(self, tenant: str, admin_key: str = "") -> Session:
        """The session of a server without keys (``ceap serve --no-auth``)."""
        return Session(tenant, "no-auth", is_admin_key(admin_key), secrets.token_urlsafe(16))

    def dump(self, session: Session) -> str:
        return self.signer.dumps([session.tenant, session.actor, session.admin, session.csrf])

    def load(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            tenant, actor, admin, csrf = self.signer.loads(cookie, max_age=MAX_AGE)
        except (BadSignature, ValueError, TypeError):
            return None
        return Session(str(tenant), str(actor), bool(admin), str(csrf))


def is_admin_key(given: str) -> bool:
    expected = os.environ.get(ADMIN_ENV, "")
    return bool(expected and given) and hmac.compare_digest(given.strip().encode(), expected.encode())

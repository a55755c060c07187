"""The HTTP API: serving candidates to client apps, the in-app inbox, and the
endpoints providers and customers call back (receipts, unsubscribe)."""

from ceap.api.app import create_app

__all__ = ["create_app"]

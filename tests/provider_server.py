"""The provider stand-in and table runner, now shipped as ``ceap.testing.provider``
(this name stays for the tests that import it from here)."""

from ceap.testing.provider import (
    MISSING,
    Case,
    HeaderValue,
    ProviderServer,
    Recorded,
    Reply,
    Responder,
    http_date_in,
    message,
    run_case,
    serve,
)

__all__ = ["MISSING", "Case", "HeaderValue", "ProviderServer", "Recorded", "Reply", "Responder",
           "http_date_in", "message", "run_case", "serve"]

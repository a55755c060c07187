"""What the public tracking endpoints answer, whatever web framework serves them.

- ``GET /t/o/<token>``: a 1x1 GIF, never cached; the first load records
  ``opened`` on the token's delivery. Later loads answer the same and record
  nothing more.
- ``GET /t/c/<token>``: a 302 to the link's destination as stored when the
  message was rendered; the first click of each link records ``clicked``.

A bad or tampered token is a 404, an expired one a 410, and neither ever
redirects. ``HEAD`` requests (link scanners, prefetchers) get the same
answer but record nothing; so do clicks within ``tracking.scanner_window``
of the send, and customers whose ``tracking`` consent is revoked (checked
again at the time of the hit). Answers carry ``Referrer-Policy: no-referrer``
so the token does not travel on to the destination.
"""

from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ceap.outcomes.config import TrackingConfig
from ceap.outcomes.engagement import DeliveryRef, delivery_for_candidate, record_in
from ceap.outcomes.links import tracking_allowed
from ceap.outcomes.tokens import NoSigningKey, TokenError, TokenExpired, TrackingClaims, link_hash, verify

log = logging.getLogger(__name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {"Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
            "Pragma": "no-cache", "Expires": "0", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff"}
_PAGE = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>"
         "<body><p>{text}</p></body></html>")


@dataclass(frozen=True)
class TrackAnswer:
    status: int
    body: bytes
    content_type: str
    location: str | None = None
    recorded: bool = False
    headers: dict[str, str] = field(default_factory=lambda: dict(NO_CACHE))


def _page(status: int, title: str, text: str) -> TrackAnswer:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
    return TrackAnswer(status, body, "text/html; charset=utf-8")


def _refused(exc: TokenError) -> TrackAnswer:
    if isinstance(exc, NoSigningKey):
        return _page(503, "Unavailable", "Link tracking is not set up on this server.")
    if isinstance(exc, TokenExpired):
        return _page(410, "Link expired", "This link has expired.")
    return _page(404, "Unknown link", "This link is not valid.")


def _settings(config: TrackingConfig | None) -> tuple[str, timedelta]:
    if config is None:
        return "opt_out", timedelta(seconds=5)
    return config.consent, config.scanner_window


def _delivery(tx: Any, claims: TrackingClaims, mode: str) -> DeliveryRef | None:
    """The token's delivery, if the customer still allows tracking on its channel."""
    ref = delivery_for_candidate(tx, claims.tenant_id, claims.candidate_id, claims.channel)
    if ref is None or not tracking_allowed(tx, claims.tenant_id, ref.customer_id, claims.channel, mode):
        return None
    return ref


def open_answer(store: Any, token: str, *, now: datetime, method: str = "GET",
                config: TrackingConfig | None = None, secret: str | bytes | None = None) -> TrackAnswer:
    """The open pixel's answer (see the module doc)."""
    try:
        claims = verify(token, kind="open", now=now, secret=secret)
    except TokenError as exc:
        return _refused(exc)
    recorded = False
    if method.upper() == "GET":
        mode, _ = _settings(config)
        try:
            with store.tx() as tx:
                ref = _delivery(tx, claims, mode)
                if ref is not None:
                    recorded = record_in(tx, [ref.engagement("opened", now, "pixel")], now) > 0
        except Exception as exc:  # the image is served even when the store is unavailable
            log.warning("open not recorded: %s", type(exc).__name__)
    return TrackAnswer(200, GIF, "image/gif", recorded=recorded)


def click_answer(store: Any, token: str, *, now: datetime, method: str = "GET",
                 config: TrackingConfig | None = None, secret: str | bytes | None = None) -> TrackAnswer:
    """The click link's answer: a redirect to the stored destination, or a 4xx page."""
    try:
        claims = verify(token, kind="click", now=now, secret=secret)
    except TokenError as exc:
        return _refused(exc)
    mode, scanner = _settings(config)
    try:
        with store.tx() as tx:
            row = tx.execute("SELECT url FROM tracked_links WHERE tenant_id = ? AND hash = ?",
                             (claims.tenant_id, claims.link)).fetchone()
            url = str(row[0]) if row else ""
            if not url or link_hash(url) != claims.link or not url.lower().startswith(("http://",
                                                                                        "https://")):
                return _page(404, "Unknown link", "This link is not valid.")
            recorded = False
            if method.upper() == "GET":
                ref = _delivery(tx, claims, mode)
                early = ref is not None and ref.sent_at is not None and now - ref.sent_at < scanner
                if ref is not None and not early:
                    item = ref.engagement("clicked", now, "link", suffix=claims.link, url=url)
                    recorded = record_in(tx, [item], now) > 0
    except Exception as exc:
        log.warning("click lookup failed: %s", type(exc).__name__)
        return _page(503, "Unavailable", "Please try again in a moment.")
    return TrackAnswer(302, b"", "text/plain; charset=utf-8", location=url, recorded=recorded)


__all__ = ["GIF", "NO_CACHE", "TrackAnswer", "click_answer", "open_answer"]

"""Open pixels and click links in rendered messages.

``Tracker.apply`` takes a rendered message and, when tracking is on and the
customer allows it, rewrites its http(s) links to signed click links
(``<base>/t/c/<token>``) and adds an open pixel to HTML e-mail
(``<base>/t/o/<token>``):

- e-mail: ``href`` attributes of ``<a>`` tags in the HTML part (except tags
  carrying ``data-ceap-notrack``), and bare URLs in the text part;
- SMS, push and in-app: bare URLs in the body;
- never: the unsubscribe link, URLs under a ``tracking.exclude`` prefix,
  other schemes (``mailto:``, ``tel:``), voice, and other channels.

Each destination is stored in ``tracked_links`` (tenant, hash) before the
message leaves, so the click endpoint can redirect to it and only to it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ceap.delivery.render import Rendered
from ceap.model import Candidate, utcnow
from ceap.outcomes.config import TrackingConfig
from ceap.outcomes.tokens import NoSigningKey, link_hash, make_token

TOPIC = "tracking"
TRACKED_KINDS = frozenset({"email", "sms", "push", "inapp"})
NOTRACK = "data-ceap-notrack"
_A_TAG = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\shref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_URL = re.compile(r"https?://[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
_TRAILING = ".,;:!?*"
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
#: re-stamp a destination's ``issued_at`` at most this often (the sweep deletes old ones)
REFRESH = timedelta(days=1)


def tracking_allowed(tx: Any, tenant: str, customer: str, channel: str, mode: str) -> bool:
    """The customer's ``tracking`` consent on ``channel`` (or on ``*``, any channel); the
    exact channel wins. Without a record: allowed for ``opt_out``, refused for ``opt_in``."""
    rows = tx.execute("SELECT channel, granted FROM consent WHERE tenant_id = ? AND customer_id = ? "
                      "AND topic = ? AND channel IN (?, '*')", (tenant, customer, TOPIC, channel)).fetchall()
    found = {ch: bool(granted) for ch, granted in rows}
    if channel in found:
        return found[channel]
    if "*" in found:
        return found["*"]
    return mode == "opt_out"


class Tracker:
    """Adds tracking to rendered messages (see the module doc). ``store`` None (a
    preview) signs links but records nothing and checks no consent."""

    def __init__(self, config: TrackingConfig, store: Any = None, *, secret: str | bytes | None = None,
                 clock: Callable[[], datetime] = utcnow, skip: tuple[str, ...] = (),
                 preview: bool = False):
        self.config = config
        self.store = store
        self.secret = secret
        self.clock = clock
        self.preview = preview
        self.skip = tuple(p for p in (*skip, *config.exclude, config.base_url + "/") if p)
        self._issued: dict[tuple[str, str], datetime] = {}

    # -- the rewriting -----------------------------------------------------
    def apply(self, rendered: Rendered, candidate: Candidate, channel: str, kind: str) -> Rendered:
        cfg = self.config
        if kind not in TRACKED_KINDS or not (cfg.opens or cfg.clicks):
            return rendered
        now = self.clock()
        links: dict[str, str] = {}   # destination -> its hash

        def click(url: str) -> str | None:
            if not cfg.clicks or url.startswith(self.skip):
                return None
            links.setdefault(url, link_hash(url))
            return url

        self._bare(rendered.body, click)
        page = rendered.html if kind == "email" else None
        if page is not None:
            self._anchors(page, click)
        if not links and not (page is not None and cfg.opens):
            return rendered
        if not self._allowed(candidate, channel):
            return rendered
        known = self._store_links(candidate.tenant_id, links, now)
        expires = now + cfg.link_ttl

        def token_url(url: str) -> str:
            if url not in known:  # a hash collision (never seen): the link stays as it was
                return url
            token = self._token("click", candidate, channel, expires, links[url])
            return f"{cfg.base_url}/t/c/{token}"

        body = self._bare(rendered.body, lambda u: token_url(u) if click(u) else None)
        if page is not None:
            page = self._anchors(page, lambda u: token_url(u) if click(u) else None)
            if cfg.opens:
                page = self._pixel(page, f"{cfg.base_url}/t/o/"
                                         f"{self._token('open', candidate, channel, expires)}")
        return replace(rendered, body=body, html=page if page is not None else rendered.html)

    def _token(self, kind: str, c: Candidate, channel: str, expires: datetime, link: str | None = None
               ) -> str:
        try:
            return make_token(kind, c.tenant_id, c.id, channel, expires, link=link,  # type: ignore[arg-type]
                              secret=self.secret)
        except NoSigningKey:
            if self.preview:
                return "PREVIEW"
            raise

    @staticmethod
    def _bare(text: str, rewrite: Callable[[str], str | None]) -> str:
        def one(match: re.Match[str]) -> str:
            url = match.group(0)
            tail = ""
            while url and url[-1] in _TRAILING:
                url, tail = url[:-1], url[-1] + tail
            new = rewrite(url)
            return (new or url) + tail
        return _URL.sub(one, text)

    @staticmethod
    def _anchors(page: str, rewrite: Callable[[str], str | None]) -> str:
        def tag(match: re.Match[str]) -> str:
            text = match.group(0)
            if NOTRACK in text.lower():
                return text

            def href(m: re.Match[str]) -> str:
                raw = m.group(2) if m.group(2) is not None else m.group(3)
                url = html.unescape(raw).strip()
                if not re.match(r"https?://", url, re.IGNORECASE):
                    return m.group(0)
                new = rewrite(url)
                return m.group(0) if new is None else f'{m.group(1)}"{html.escape(new, quote=True)}"'
            return _HREF.sub(href, text, count=1)
        return _A_TAG.sub(tag, page)

    @staticmethod
    def _pixel(page: str, url: str) -> str:
        img = (f'<img src="{html.escape(url, quote=True)}" width="1" height="1" alt="" '
               'style="display:block;border:0;width:1px;height:1px">')
        ends = list(_BODY_END.finditer(page))
        if ends:
            at = ends[-1].start()
            return page[:at] + img + page[at:]
        return page + img

    # -- the store ---------------------------------------------------------
    def _allowed(self, c: Candidate, channel: str) -> bool:
        if self.store is None:
            return True
        with self.store.tx() as tx:
            return tracking_allowed(tx, c.tenant_id, c.customer_id, channel, self.config.consent)

    def _store_links(self, tenant: str, links: dict[str, str], now: datetime) -> set[str]:
        """Record each destination under its hash (before the message is sent); the
        destinations that are now safely stored. A hash already held by another URL
        (a collision) leaves that link untracked."""
        if self.store is None:
            return set(links)
        fresh = {u: h for u, h in links.items()
                 if now - self._issued.get((tenant, h), datetime.min.replace(tzinfo=now.tzinfo)) > REFRESH}
        if fresh:
            with self.store.tx() as tx:
                tx.executemany(
                    "INSERT INTO tracked_links (tenant_id, hash, url, issued_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (tenant_id, hash) DO UPDATE SET issued_at = excluded.issued_at "
                    "WHERE tracked_links.url = excluded.url",
                    [(tenant, h, u, tx.ts(now)) for u, h in fresh.items()])
                hashes = list(fresh.values())
                stored = dict(tx.execute(
                    f"SELECT hash, url FROM tracked_links WHERE tenant_id = ? AND hash "
                    f"IN ({tx.placeholders(len(hashes))})", (tenant, *hashes)).fetchall())
            for u, h in fresh.items():
                if stored.get(h) == u:
                    if len(self._issued) > 100_000:
                        self._issued.clear()
                    self._issued[(tenant, h)] = now
        return {u for u, h in links.items() if (tenant, h) in self._issued or self.store is None}


def purge_links(store: Any, before: datetime) -> int:
    """Delete destinations last put in a message before ``before`` (their links have expired)."""
    with store.tx() as tx:
        cur = tx.execute("DELETE FROM tracked_links WHERE issued_at < ?", (tx.ts(before),))
        return int(cur.rowcount or 0)


__all__ = ["NOTRACK", "REFRESH", "TOPIC", "TRACKED_KINDS", "Tracker", "purge_links", "tracking_allowed"]

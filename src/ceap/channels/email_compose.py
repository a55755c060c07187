"""The MIME message every e-mail channel sends, built with the ``email`` package.

``compose`` builds a multipart/alternative message (text, and HTML when the
renderer gave some) with From and Reply-To from the config, a Message-ID
derived from the tenant and idempotency key (the same on every retry, so a
receiver can drop a duplicate) and the renderer's headers. Marketing mail
carries RFC 8058 one-click unsubscribe headers (``List-Unsubscribe`` with an
https URI and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``); with
``require_unsubscribe`` a marketing message without them is refused.

This is the reference composition: ``email_mime.compose_bytes`` writes the
same message's bytes directly (much faster) and falls back to it for what it
does not handle itself.
"""

from __future__ import annotations

import email.policy
import hashlib
import time
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from functools import lru_cache

from pydantic import Field, model_validator

from ceap.channels.base import Message
from ceap.channels.external import ExternalConfig

#: headers the renderer may not set: the channel owns them
PROTECTED = frozenset({"from", "to", "cc", "bcc", "subject", "message-id", "date", "sender", "reply-to",
                       "return-path", "mime-version", "content-type", "content-transfer-encoding"})
ONE_CLICK = "List-Unsubscribe=One-Click"


class _Registry(HeaderRegistry):
    """The standard registry builds a new class each time it parses a header (a third
    of the cost of composing a message); build each header class once."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        cls = self._classes.get(name.lower())
        if cls is None:
            cls = self._classes[name.lower()] = super().__getitem__(name)
        return cls


#: email.policy.default, with the faster registry
# lines up to RFC 5322's 998 characters: a long List-Unsubscribe URL must stay one raw
# value (an encoded-word would hide the one-click URI from mail clients)
POLICY = email.policy.default.clone(header_factory=_Registry(), max_line_length=998)
_date: tuple[int, BaseHeader | None] = (0, None)


@lru_cache(maxsize=256)
def _header(name: str, value: str) -> BaseHeader:
    """A parsed header, for values that repeat (From, Reply-To): parsed once."""
    return POLICY.header_factory(name, value)  # type: ignore[no-any-return]


def date_header() -> BaseHeader:
    """The Date header of this second (parsed once a second)."""
    global _date
    now = int(time.time())
    at, header = _date
    if header is None or at != now:
        header = POLICY.header_factory("Date", formatdate(now, usegmt=True))
        _date = (now, header)
    return header


class EmailConfig(ExternalConfig):
    """What every e-mail channel needs to compose a message."""

    type: str
    from_address: str = Field(description="'Acme <news@acme.example>' or 'news@acme.example'")
    reply_to: str | None = Field(None, description="Reply-To address")
    require_unsubscribe: bool = Field(False, description="refuse marketing mail without RFC 8058 "
                                                         "one-click unsubscribe headers")
    message_id_domain: str | None = Field(None, description="right side of Message-IDs "
                                                            "(default: the From domain)")

    @model_validator(mode="after")
    def _check_from(self) -> EmailConfig:
        if "@" not in parseaddr(self.from_address)[1]:
            raise ValueError(f"from_address {self.from_address!r} holds no e-mail address")
        return self

    @property
    def sender(self) -> str:
        """The bare From address (the SMTP envelope sender)."""
        return bare_address(self.from_address)

    @property
    def id_domain(self) -> str:
        """The right side of Message-IDs."""
        return self.message_id_domain or self.sender.rpartition("@")[2]


@lru_cache(maxsize=256)
def bare_address(address: str) -> str:
    """``news@acme.example`` of ``Acme <news@acme.example>`` (parsed once per value)."""
    return parseaddr(address)[1]


def message_id(m: Message, domain: str) -> str:
    digest = hashlib.sha256(f"{m.tenant_id}\0{m.idempotency_key}".encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"


def has_one_click(headers: dict[str, str]) -> bool:
    """RFC 8058: an https List-Unsubscribe URI and the One-Click List-Unsubscribe-Post."""
    lower = {k.lower(): v for k, v in headers.items()}
    return ("<https://" in lower.get("list-unsubscribe", "")
            and lower.get("list-unsubscribe-post", "").strip() == ONE_CLICK)


def check(m: Message, config: EmailConfig) -> None:
    """ValueError if ``m`` may not be sent (no address, no one-click unsubscribe when required)."""
    if not m.to:
        raise ValueError(f"no email for customer {m.customer_id!r}")
    if config.require_unsubscribe and m.category == "marketing" and not has_one_click(m.headers):
        raise ValueError("marketing mail without RFC 8058 one-click unsubscribe headers "
                         "(List-Unsubscribe with an https URI, List-Unsubscribe-Post: "
                         f"{ONE_CLICK})")


def protected(name: str) -> None:
    """ValueError if the renderer may not set header ``name``."""
    if name.lower() in PROTECTED:
        raise ValueError(f"the renderer may not set the {name} header")


def single_line(value: str) -> str:
    """``value``; ValueError if it holds a line break (also a trailing one, which the email
    package would write as a bare LF in the header block)."""
    if value and value.splitlines() != [value]:
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    return value


def compose(m: Message, config: EmailConfig) -> EmailMessage:
    """The MIME message for ``m``; ValueError if it may not or cannot be sent."""
    check(m, config)
    msg = EmailMessage(policy=POLICY)
    msg["Subject"] = single_line(m.title)
    msg["From"] = _header("From", config.from_address)
    msg["To"] = m.to
    if config.reply_to:
        msg["Reply-To"] = _header("Reply-To", config.reply_to)
    msg["Date"] = date_header()
    msg["Message-ID"] = message_id(m, config.id_domain)
    for name, value in m.headers.items():
        protected(name)
        msg[name] = single_line(value)  # no header injection
    msg.set_content(m.body or m.title)
    if m.html:
        msg.add_alternative(m.html, subtype="html")
    return msg


__all__ = ["ONE_CLICK", "POLICY", "PROTECTED", "EmailConfig", "bare_address", "check", "compose",
           "date_header", "has_one_click", "message_id", "protected", "single_line"]

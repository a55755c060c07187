"""A local SMTP server (aiosmtpd on 127.0.0.1) that keeps what it receives, and the
links a simulated reader follows in each e-mail: the open pixel, the tracked links
and the one-click unsubscribe URL."""

from __future__ import annotations

import email
import re
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

_PIXEL = re.compile(r"""<img[^>]+src="([^"]+/t/o/[A-Za-z0-9_\-]+)\"""")
_CLICK = re.compile(r"""href="([^"]+/t/c/[A-Za-z0-9_\-]+)\"""")
_UNSUBSCRIBE = re.compile(r"<(https?://[^>]+)>")


@dataclass(frozen=True)
class Links:
    """The links of one received e-mail."""

    to: str
    pixel: str | None
    clicks: tuple[str, ...]
    unsubscribe: str | None


@dataclass
class _Handler:
    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(envelope.content)
        return "250 OK"


class Mailbox:
    """An SMTP server on a free local port; ``port`` for the channel, ``links()`` to read."""

    def __init__(self) -> None:
        self.handler = _Handler()
        with socket.socket() as probe:  # a free port (aiosmtpd cannot start on port 0)
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        self._read = 0

    def __len__(self) -> int:
        return len(self.handler.messages)

    def take(self) -> list[Links]:
        """The links of the e-mails received since the last call."""
        with self.handler.lock:
            new = self.handler.messages[self._read:]
            self._read = len(self.handler.messages)
        return [parse_links(raw) for raw in new]

    def close(self) -> None:
        self.controller.stop()


def parse_links(raw: bytes) -> Links:
    """The recipient, pixel, tracked links and unsubscribe URL of a raw e-mail."""
    message = email.message_from_bytes(raw)  # compat32: no header objects, many times faster
    html = ""
    for part in message.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                html = payload.decode(part.get_content_charset() or "utf-8", "replace")
    pixel = _PIXEL.search(html)
    unsubscribe = _UNSUBSCRIBE.search(str(message.get("List-Unsubscribe", "")))
    return Links(str(message.get("To", "")), pixel.group(1) if pixel else None,
                 tuple(dict.fromkeys(_CLICK.findall(html))),
                 unsubscribe.group(1) if unsubscribe else None)


__all__ = ["Links", "Mailbox", "parse_links"]

"""The SSRF guard for connections a library makes itself (Apprise's services).

``http_common`` guards the connections CEAP opens. A library such as Apprise
opens its own (``requests``, ``smtplib``, raw sockets), so the same rules are
applied around it::

    with guarded(allow_private=False) as guard:
        apprise.notify(...)
    guard.refused   # why a connection was refused, or a redirect not followed

While the block runs, in its context (a ``ContextVar``: worker threads that
copy the caller's context, as Apprise's do, carry it too):

- every socket ``connect``, ``sendto`` and ``sendmsg`` is checked against the
  address the socket is about to use, after DNS (so a name that resolves
  differently between a check and the connection cannot slip through):
  link-local addresses (cloud metadata at 169.254.169.254, fe80::/10) are
  refused always; loopback, private, CGNAT and unique-local ones unless
  ``allow_private``; a socket connecting to a name (resolving it itself) is
  refused, and one that is not IP (a Unix socket) unless ``allow_private``;
- ``requests`` follows no redirect (a 3xx answer is recorded as refused) and
  reads no proxy variable.

A refused connection raises ``PermissionError`` inside the library (a
connection error to it) and is recorded in ``guard.refused``.

It rests on Python's audit hooks (the ``socket.connect`` event is raised by
the socket itself before it connects) and one wrapper of
``requests.Session.send``, both installed once per process and inert
outside a ``guarded`` block.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ceap.channels.http_common import refusal

_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})


@dataclass
class Guard:
    """One guarded block: its setting and what it refused (appended from any thread)."""

    allow_private: bool
    refused: list[str] = field(default_factory=list)

    def check(self, address: Any) -> None:
        """Raise ``PermissionError`` (and record why) unless ``address`` may be reached."""
        why = self._why(address)
        if why:
            self.refused.append(why)
            raise PermissionError(f"refused by CEAP's SSRF guard: {why}")

    def _why(self, address: Any) -> str | None:
        if not isinstance(address, tuple) or not address:
            return None if self.allow_private else "a non-IP socket address is not allowed " \
                                                   "(set allow_private for a self-hosted target)"
        host = str(address[0]).split("%")[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:  # the socket would resolve it itself, after any check
            return f"a connection to the name {host}, not to a resolved address, cannot be checked"
        why = refusal(ip, self.allow_private)
        return f"{ip} is {why}" if why else None


_current: ContextVar[Guard | None] = ContextVar("ceap_outbound_guard", default=None)
_install_lock = threading.Lock()
_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _EVENTS:
        guard = _current.get()
        if guard is not None and len(args) > 1 and args[1] is not None:
            guard.check(args[1])


def _wrap_requests() -> None:
    try:
        import requests
    except ImportError:  # a library without requests connects by sockets only
        return
    send = requests.Session.send

    def guarded_send(self: Any, request: Any, **kwargs: Any) -> Any:
        guard = _current.get()
        if guard is None:
            return send(self, request, **kwargs)
        kwargs["allow_redirects"] = False
        kwargs["proxies"] = {}
        response = send(self, request, **kwargs)
        if response.is_redirect or 300 <= response.status_code < 400:
            guard.refused.append(f"HTTP {response.status_code}: redirects are not followed")
        return response

    requests.Session.send = guarded_send  # type: ignore[method-assign]


def install() -> None:
    """Install the audit hook and the ``requests`` wrapper (once per process)."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _wrap_requests()
            _installed = True


@contextmanager
def guarded(allow_private: bool) -> Iterator[Guard]:
    """Apply the guard to every connection made in this context until the block ends."""
    install()
    guard = Guard(allow_private)
    token = _current.set(guard)
    try:
        yield guard
    finally:
        _current.reset(token)


__all__ = ["Guard", "guarded", "install"]

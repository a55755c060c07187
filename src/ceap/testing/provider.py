"""A provider stand-in for channel tests: a local HTTP server that records every
request and answers from a script, and the table runner the built-in channels'
provider tests use.

::

    from ceap.testing import ProviderServer, Reply

    with ProviderServer() as provider:                 # listens on 127.0.0.1, a free port
        provider.script(Reply(429, {"retry_after": 2.5}), Reply(200, {"id": "m-1"}))
        ...  # point the channel at f"{provider.url}/send" with allow_private: true
        [request] = provider.calls("/send")            # what the channel sent
        request.json(), request.headers["authorization"]

Replies queued with ``script`` answer in order, then ``default`` (200 with
``{}``, or any function of the request). A ``route`` answers its path before
the script (a token endpoint, say), so scripted replies stay for the calls
under test. A reply may be delayed past the client's time-out. A header value
may be a function, called when the reply goes out: a time in a header (an
HTTP-date ``Retry-After``, ``http_date_in(30)``) is then read from the clock
at that moment, never when the test module was imported.

A provider test can be a table of ``Case`` rows: the channel config, the
scripted replies, what the request must look like (dotted paths into the
recorded request: ``form.To``, ``json.message.token``, ``header.authorization``)
and what ``send`` must return. ``run_case`` runs one row against the server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ceap.channels.base import Message, SendResult
from ceap.plugin import PluginContext

HeaderValue = str | Callable[[], str]


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a dict body is sent as JSON; ``delay`` seconds first; a header
    value given as a function is called as the reply is sent."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    headers: dict[str, HeaderValue] = field(default_factory=dict)
    delay: float = 0.0


def http_date_in(seconds: float) -> Callable[[], str]:
    """A header value: the HTTP-date ``seconds`` from the moment the reply is sent."""
    return lambda: format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@dataclass(frozen=True)
class Recorded:
    """One request the server received (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        parsed = parse_qs(self.body.decode(), keep_blank_values=True)
        return {k: v[-1] for k, v in parsed.items()}

    def get(self, dotted: str) -> Any:
        """``method``, ``path``, ``body``, ``query.X``, ``header.X``, ``form.X`` or ``json.a.b``;
        a missing field is ``MISSING``."""
        head, _, rest = dotted.partition(".")
        if not rest:
            return getattr(self, head)
        if head == "json":
            value: Any = self.json()
            for part in rest.split("."):
                if not (isinstance(value, dict) and part in value):
                    return MISSING
                value = value[part]
            return value
        fields = {"query": lambda: self.query, "header": lambda: self.headers, "form": self.form}[head]()
        return fields.get(rest.lower() if head == "header" else rest, MISSING)


MISSING = object()
Responder = Callable[[Recorded], Reply]


class ProviderServer:
    """``with ProviderServer() as server: ... server.url ...``: an HTTP/1.1 server on
    127.0.0.1 (a free port) in a thread; ``requests`` holds every request received."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.default: Responder = lambda _r: Reply(200, {})
        self._queue: list[Reply] = []
        self._routes: list[tuple[str, Responder]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                recorded = Recorded(self.command, parts.path,
                                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                                    {k.lower(): v for k, v in self.headers.items()}, body)
                reply = server._answer(recorded)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload).encode()
                    content_type = "application/json"
                else:
                    content_type = "text/plain"
                data = payload.encode() if isinstance(payload, str) else (payload or b"")
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": content_type, **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value() if callable(value) else value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a time-out test)
                    self.close_connection = True

            do_POST = do_GET = do_PUT = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *replies: Reply) -> None:
        """Queue replies, used in order by requests no route answers."""
        with self._lock:
            self._queue.extend(replies)

    def route(self, path: str, responder: Responder | Reply) -> None:
        """Answer requests whose path starts with ``path`` (before the script)."""
        fn = responder if callable(responder) else (lambda _r, reply=responder: reply)
        with self._lock:
            self._routes.append((path, fn))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self._routes.clear()
            self.default = lambda _r: Reply(200, {})

    def calls(self, path_prefix: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def _answer(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            route = next((fn for p, fn in self._routes if recorded.path.startswith(p)), None)
            if route is None and self._queue:
                return self._queue.pop(0)
        return (route or self.default)(recorded)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ProviderServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve() -> Iterator[ProviderServer]:
    """Body of a pytest fixture: ``yield from serve()``."""
    with ProviderServer() as server:
        yield server


# -- the table runner ------------------------------------------------------------


@dataclass
class Case:
    """One row of a provider table."""

    id: str
    config: dict[str, Any]
    replies: list[Reply] = field(default_factory=list)
    #: dotted request field -> expected value, or a predicate on the value
    request: dict[str, Any] = field(default_factory=dict)
    #: SendResult field -> expected value, or a predicate on the value
    result: dict[str, Any] = field(default_factory=dict)
    message: dict[str, Any] = field(default_factory=dict)
    #: the path prefix of the call under test (other calls, a token fetch say, are ignored)
    path: str = ""
    #: how many calls to that path the send makes (retries are the dispatcher's, not the channel's)
    calls: int = 1


def message(**fields: Any) -> Message:
    """A valid SMS-shaped message (tenant ``acme``, key ``acme:dedup-1:sms``); ``fields`` override."""
    base: dict[str, Any] = {"tenant_id": "acme", "idempotency_key": "acme:dedup-1:sms",
                            "customer_id": "c1", "program": "win_back", "channel": "sms",
                            "title": "Hello", "body": "Your cart misses you", "to": "+15550001111"}
    return Message(**{**base, **fields})


def _matches(expected: Any, actual: Any) -> bool:
    return bool(expected(actual)) if callable(expected) else actual == expected


def run_case(server: ProviderServer, cls: type[Any], case: Case,
             context: PluginContext | None = None) -> tuple[SendResult, list[Recorded]]:
    """Send one message through ``cls`` configured by ``case`` against ``server``;
    assert the request shape and the result. Returns both for further checks."""
    server.script(*case.replies)
    channel = cls.from_dict({**case.config}, context)
    try:
        [result] = channel.send([message(**case.message)])
    finally:
        channel.close()
    calls = server.calls(case.path)
    assert len(calls) == case.calls, f"{case.id}: {len(calls)} call(s) to {case.path!r}, " \
                                     f"expected {case.calls}"
    if calls:
        for name, expected in case.request.items():
            actual = calls[-1].get(name)
            if expected is MISSING:
                assert actual is MISSING, f"{case.id}: the request has {name} = {actual!r}"
                continue
            assert actual is not MISSING, f"{case.id}: the request has no {name}"
            assert _matches(expected, actual), f"{case.id}: request {name} = {actual!r}"
    for name, expected in case.result.items():
        actual = getattr(result, name)
        assert _matches(expected, actual), f"{case.id}: result.{name} = {actual!r} ({result})"
    return result, calls


__all__ = ["MISSING", "Case", "HeaderValue", "ProviderServer", "Recorded", "Reply", "Responder",
           "http_date_in", "message", "run_case", "serve"]

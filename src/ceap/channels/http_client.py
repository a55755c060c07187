"""The HTTP/1.1 client of the channels: lean, keep-alive, SSRF-guarded.

``HttpClient.request(method, url, body, headers)`` returns a ``Response``.
It keeps one connection per (thread, scheme, host, port) and, per request,
builds the request line, the headers and the body as one ``bytes`` object,
sends it with one ``sendall`` (one wake-up of the peer), reads the answer
with ``recv_into`` into the connection's buffer and parses it with
httptools (llhttp, in C): content-length, chunked and read-until-close
bodies, interim 1xx answers skipped. Each connection goes through
``ssrf.connect_checked`` (resolve, check every address, connect to a
checked one), then TLS with certificate and host name checks for https.
``timeout`` bounds the connection and each read. A kept-alive connection
is reused unless the peer closed it while idle (``_dropped``), the answer
said ``Connection: close`` (or was HTTP/1.0 without keep-alive, or ran until
the peer closed), its body went past ``MAX_BODY`` (the first ``MAX_BODY``
bytes are kept) or bytes followed it. A failed request closes its
connection. No redirect is followed and no proxy variable is read.

Errors: ``Refused`` (the guard), ``TimeoutError``, ``OSError`` (refused
connection, TLS failure, ``http.client.RemoteDisconnected`` when the peer
closes before answering), ``http.client.HTTPException``
(``http.client.IncompleteRead`` for a body cut short, ``ProtocolError`` for
an answer that is not HTTP/1.x, ``http.client.InvalidURL`` for a path with
spaces or control characters) and ``ValueError`` for a header that would
break the request (a line break in a value, an illegal name, a character
outside Latin-1), as ``http.client`` raised.
"""

from __future__ import annotations

import http.client
import json
import re
import select
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from ceap.channels.ssrf import check_url, connect_checked

MAX_BODY = 64 * 1024
#: bytes of the status line and headers an answer may have
MAX_HEAD = 256 * 1024
_BUFFER = 64 * 1024
_BAD_PATH = re.compile("[\x00-\x20\x7f]").search
_UNSAFE = re.compile("[\t\r\n]").search  # what urlsplit removes
_LEGAL_NAME = re.compile(r"[^:\s][^:\r\n]*").fullmatch
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_IDENTITY = "Accept-Encoding: identity\r\n"
_plans: dict[tuple[str, ...], tuple[bool, bool, bool, bool]] = {}  # see _plan


class ProtocolError(http.client.HTTPException):
    """The answer is not HTTP/1.x (a bad status line, a head longer than ``MAX_HEAD``)."""


@dataclass(frozen=True)
class Response:
    """A provider's answer: the status, the headers (names lower-cased) and the first
    ``MAX_BODY`` bytes of the body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` when it is not JSON."""
        return json.loads(self.body)


class _Answer:
    """The parser's callbacks for one answer (the final one: 1xx answers are skipped)."""

    __slots__ = ("after", "chunks", "done", "head", "head_only", "headers", "keep", "parser", "seen",
                 "size", "status")

    def __init__(self, head_only: bool):
        self.parser: Any = httptools.HttpResponseParser(self)
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = self.status = self.seen = 0
        self.head = self.done = self.after = self.keep = False
        self.head_only = head_only

    def on_message_begin(self) -> None:
        if self.done:
            self.after = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
                self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.done:  # bytes after the answer
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue): the answer follows
            self.headers = {}
            return
        self.status, self.head = status, True
        self.keep = self.parser.should_keep_alive() and \
            "close" not in self.headers.get("connection", "").lower()
        if self.head_only:
            self.done = True

    def on_body(self, data: bytes) -> None:
        if self.done:
            return
        if self.size < MAX_BODY:
            self.chunks.append(data)
        self.size += len(data)

    def on_message_complete(self) -> None:
        if self.head:
            self.done = True

    def until_close(self) -> bool:
        """The body runs until the peer closes (no length, not chunked)."""
        return "content-length" not in self.headers and \
            "chunked" not in self.headers.get("transfer-encoding", "").lower()


class _Connection:
    """One kept-alive connection to an origin (opened again after a close)."""

    __slots__ = ("allow_private", "host", "host_line", "port", "sock", "timeout", "tls", "view")

    def __init__(self, scheme: str, host: str, port: int | None, client: HttpClient):
        default = 443 if scheme == "https" else 80
        self.host, self.port = host, port or default
        shown = f"[{host}]" if ":" in host else host
        self.host_line = f"Host: {shown}\r\n" if self.port == default else f"Host: {shown}:{self.port}\r\n"
        self.tls = client.tls if scheme == "https" else None
        self.timeout, self.allow_private = client.timeout, client.allow_private
        self.sock: socket.socket | None = None
        self.view = memoryview(bytearray(_BUFFER))

    def open(self) -> socket.socket:
        """The socket, connected (and checked by the guard) if it is not."""
        sock = self.sock
        if sock is not None:
            if not _dropped(sock):
                return sock
            self.close()
        sock = connect_checked(self.host, self.port, self.timeout, self.allow_private)
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        return sock

    def exchange(self, data: bytes, head_only: bool) -> Response:
        """Send ``data`` (one request) and read its answer; closes the connection on any failure."""
        try:
            sock = self.open()
            sock.sendall(data)
            answer = _Answer(head_only)
            while not self.read_some(sock, answer):
                pass
        except BaseException:
            self.close()
            raise
        return self.finish(answer)

    def read_some(self, sock: socket.socket, answer: _Answer) -> bool:
        """One ``recv_into`` of ``answer`` fed to its parser; True once the answer is complete
        (or past ``MAX_BODY``). Raises as ``request`` does; the caller closes on a failure."""
        view = self.view
        n = sock.recv_into(view)
        if not n:
            if answer.head and answer.until_close():
                answer.done = True
                return True
            if not answer.seen:
                raise http.client.RemoteDisconnected("Remote end closed connection without response")
            raise http.client.IncompleteRead(b"".join(answer.chunks))
        answer.seen += n
        try:
            answer.parser.feed_data(view[:n])
        except httptools.HttpParserUpgrade:  # 101 Switching Protocols: not for us
            answer.done = answer.after = True
        except httptools.HttpParserError as exc:
            if not answer.done:
                raise ProtocolError(f"the answer is not HTTP/1.x: {exc}") from None
            answer.after = True  # junk after a complete answer
        if not answer.head and answer.seen > MAX_HEAD:
            raise ProtocolError(f"the answer's head is longer than {MAX_HEAD} bytes")
        return answer.done or answer.size > MAX_BODY

    def finish(self, answer: _Answer) -> Response:
        """The ``Response`` of a read answer; closes the connection unless it may be reused."""
        answer.parser = None  # no cycle to collect
        body = b"".join(answer.chunks)
        if len(body) > MAX_BODY or not answer.done:
            body = body[:MAX_BODY]
        if not (answer.done and answer.keep) or answer.after or answer.size > MAX_BODY or answer.head_only:
            self.close()
        return Response(answer.status, answer.headers, body)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


def _dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable was closed by the peer (or sent junk)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _plan(names: tuple[str, ...]) -> tuple[bool, bool, bool, bool]:
    """Which of Host, Accept-Encoding, User-Agent and Content-Length headers with these
    names leave to ``_head`` (kept per tuple of names: a channel sends the same ones); a
    ``ValueError`` for an illegal name."""
    plan = _plans.get(names)
    if plan is None:
        for name in names:
            if not _LEGAL_NAME(name):
                raise ValueError(f"invalid header name {name!r}")
        given = {name.lower() for name in names}
        plan = ("host" not in given, "accept-encoding" not in given, "user-agent" not in given,
                "content-length" not in given)
        if len(_plans) < 4096:
            _plans[names] = plan
    return plan


class HeaderSet:
    """The headers a channel sends on every request: the names, and the values of the
    ``fixed`` ones, are the same each time. They are checked and joined once (and, per
    method, origin and user agent, with the headers ``_head`` adds), so a request's head
    costs one join of the ``varying`` values: ``HeaderSet(fixed, varying)(*values)`` is
    a request's ``Headers``, sent as the same dict of ``fixed`` then ``varying`` would be.
    A name in both is sent once, with its varying value."""

    __slots__ = ("_heads", "error", "fixed", "lines", "plan", "varying")

    def __init__(self, fixed: Mapping[str, str], varying: tuple[str, ...]):
        self.fixed = {name: value for name, value in fixed.items() if name not in varying}
        self.varying = varying
        self.lines = "".join([f"{name}: {value}\r\n" for name, value in self.fixed.items()])
        self.plan = (False, False, False, False)
        #: what each request raises (an illegal name, a line break), as a dict of these would
        self.error: ValueError | None = None
        try:
            self.plan = _plan((*self.fixed, *varying))
            if self.lines.count("\n") != len(self.fixed) or self.lines.count("\r") != len(self.fixed):
                raise ValueError("a header holds a line break")
        except ValueError as exc:
            self.error = exc
        self._heads: dict[tuple[str, str, str], str] = {}

    def __call__(self, *values: str) -> Headers:
        if len(values) != len(self.varying):
            raise ValueError(f"{len(self.varying)} header values expected, {len(values)} given")
        return Headers(self, values)

    def head(self, method: str, conn: _Connection, user_agent: str) -> str:
        """What follows the request line up to the varying headers (kept per method, origin
        and user agent)."""
        key = (method, conn.host_line, user_agent)
        head = self._heads.get(key)
        if head is None:
            host, encoding, agent, _ = self.plan
            head = (conn.host_line if host else "") + (_IDENTITY if encoding else "") + \
                (f"User-Agent: {user_agent}\r\n" if agent else "") + self.lines
            if len(self._heads) < 64:
                self._heads[key] = head
        return head


class Headers(Mapping[str, str]):
    """One request's headers of a ``HeaderSet`` (a read-only mapping)."""

    __slots__ = ("given", "header_set")

    def __init__(self, header_set: HeaderSet, values: tuple[str, ...]):
        self.header_set, self.given = header_set, values

    def __getitem__(self, name: str) -> str:
        if name in self.header_set.varying:
            return self.given[self.header_set.varying.index(name)]
        return self.header_set.fixed[name]

    def __iter__(self) -> Iterator[str]:
        return iter((*self.header_set.fixed, *self.header_set.varying))

    def __len__(self) -> int:
        return len(self.header_set.fixed) + len(self.header_set.varying)

    def lines(self) -> str:
        """The varying headers' lines; a ``ValueError`` for a value with a line break (or
        the set's own)."""
        if self.header_set.error is not None:
            raise self.header_set.error
        lines = "".join([f"{name}: {value}\r\n"
                         for name, value in zip(self.header_set.varying, self.given, strict=True)])
        if lines.count("\n") != len(self.given) or lines.count("\r") != len(self.given):
            raise ValueError("a header holds a line break")
        return lines


def _head(method: str, path: str, conn: _Connection, user_agent: str, headers: Mapping[str, str],
          body: bytes | None) -> bytes:
    """The request line and headers: Host, Accept-Encoding: identity, User-Agent and
    Content-Length unless ``headers`` set them (any case)."""
    if _BAD_PATH(path):
        raise http.client.InvalidURL(f"the URL path holds a space or control character: {path!r}")
    if type(headers) is Headers:  # the fixed part checked and joined once
        lines = headers.lines()
        head = f"{method} {path} HTTP/1.1\r\n{headers.header_set.head(method, conn, user_agent)}{lines}"
        if headers.header_set.plan[3] and (body is not None or method in _BODY_METHODS):
            head += f"Content-Length: {len(body) if body is not None else 0}\r\n"
        return (head + "\r\n").encode("latin-1")
    host, encoding, agent, length = _plan(tuple(headers))
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
        raise ValueError("a header holds a line break")
    head = f"{method} {path} HTTP/1.1\r\n"
    if host:
        head += conn.host_line
    if encoding:
        head += _IDENTITY
    if agent:
        head += f"User-Agent: {user_agent}\r\n"
    head += fields
    if length and (body is not None or method in _BODY_METHODS):
        head += f"Content-Length: {len(body) if body is not None else 0}\r\n"
    return (head + "\r\n").encode("latin-1")


class HttpClient:
    """Keep-alive connections, one per (thread, scheme, host, port); thread-safe."""

    def __init__(self, allow_private: bool = False, timeout: float = 10.0, user_agent: str = "ceap",
                 tls: ssl.SSLContext | None = None):
        self.allow_private = allow_private
        self.timeout = timeout
        self.user_agent = user_agent
        self.tls = tls or ssl.create_default_context()
        self._local = threading.local()
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
        self._origins: dict[str, tuple[str, str, int | None]] = {}  # "scheme://netloc" checked

    def __repr__(self) -> str:
        return f"HttpClient(allow_private={self.allow_private}, timeout={self.timeout})"

    def _target(self, url: str) -> tuple[tuple[str, str, int | None], str]:
        """(scheme, host, port) and the path with the query; each origin is checked
        (``check_url``) once, and a URL that starts with a checked one is not parsed again."""
        start = url.find("://") + 3
        end = url.find("/", start)
        if end < 0:
            end = len(url)
        for mark in "?#":
            at = url.find(mark, start, end)
            if at >= 0:
                end = at
        origin = self._origins.get(url[:end]) if start > 2 else None
        rest = url[end:]
        if origin is not None and not _UNSAFE(rest):  # as urlsplit would split it
            rest = rest.partition("#")[0]
            return origin, rest if rest[:1] == "/" else "/" + rest
        parts = urlsplit(url)
        origin = self._origins.get(f"{parts.scheme}://{parts.netloc}")
        if origin is None:
            check_url(url, self.allow_private)
            origin = (parts.scheme, parts.hostname or "", parts.port)
            if len(self._origins) < 1024:
                self._origins[f"{parts.scheme}://{parts.netloc}"] = origin
        path = parts.path or "/"
        return origin, f"{path}?{parts.query}" if parts.query else path

    def _connection(self, origin: tuple[str, str, int | None]) -> _Connection:
        try:
            pool: dict[tuple[str, str, int | None], _Connection] = self._local.pool
        except AttributeError:
            pool = self._local.pool = {}
        conn = pool.get(origin)
        if conn is None:
            conn = pool[origin] = _Connection(*origin, client=self)
            with self._lock:
                self._all.append(conn)
        return conn

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        """One request; raises ``Refused``, ``TimeoutError``, ``OSError``,
        ``http.client.HTTPException`` or ``ValueError`` (see the module doc)."""
        origin, path = self._target(url)
        conn = self._connection(origin)
        head = _head(method, path, conn, self.user_agent, headers or {}, body)
        return conn.exchange(head + body if body else head, method == "HEAD")

    def close(self) -> None:
        with self._lock:
            conns = list(self._all)
        for conn in conns:
            conn.close()


__all__ = ["MAX_BODY", "MAX_HEAD", "HeaderSet", "Headers", "HttpClient", "ProtocolError", "Response"]

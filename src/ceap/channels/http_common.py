"""HTTP for channels that POST to a provider or to a URL a user configured.

The API is a few names::

    client = guarded_client(allow_private=False, timeout=10.0)
    result = send_json(client, url, payload, headers, key)     # -> SendResult
    result = send_request(client, "POST", url, body, headers, key)
    answer = try_request(client, "POST", url, body, headers, key)  # Response | SendResult
    client.close()

and ``HttpChannel``, the base of a channel that POSTs (an ``ExternalChannel``
holding a ``guarded_client``). ``guarded_client`` keeps one keep-alive connection per host and thread (on
the standard library's ``http.client``, measured 3 to 5 times faster than
httpx's pooled client with threads on the webhook benchmark) and applies the
SSRF guard of RELIABILITY.md when it connects: http(s) only; the host is
resolved and every address is checked, then the socket connects to a checked
address (resolve and pin, so a DNS answer that changes between check and
connect cannot slip through); loopback, private, CGNAT, unique-local IPv6
and other non-global addresses are refused unless ``allow_private`` (a
self-hosted install, tests on loopback); link-local addresses (cloud
metadata at 169.254.169.254) are refused always. No redirect is followed
and no proxy variable is read.

Answers map to ``SendResult``: 2xx sent; 429, 408, 425 and 5xx retryable
with the wait the target asked for (a reader of the body's wait when the
channel gives one, else ``Retry-After``, else one second for a 429: the rule
of ``http_status.http_failure``); 3xx and other 4xx permanent;
time-outs and connection failures retryable, their error starting with
``unreachable:``. Errors name the status or the failure, never the URL (it
may hold a token) and never the target's response body.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from pydantic import Field

from ceap.channels.base import SendResult
from ceap.channels.external import UNREACHABLE, ExternalChannel, ExternalConfig, halts
from ceap.channels.http_status import DEFAULT_THROTTLE, http_failure, is_retryable, parse_retry_after

MAX_BODY = 64 * 1024
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class Refused(Exception):
    """The SSRF guard refused a target (scheme or address)."""


def refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why the guard refuses ``ip``, as a phrase that reads after "<ip> is" (None: allowed).
    Public unicast addresses always pass; other non-link-local unicast ones with
    ``allow_private``; link-local ones (cloud metadata at 169.254.169.254) never."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return "a link-local address (cloud metadata and the like), refused even with allow_private"
    if ip.is_multicast or ip.is_unspecified:
        return "not a unicast address"
    if allow_private or (ip.is_global and ip not in _CGNAT):
        return None
    return "not a public address (set allow_private for a self-hosted target)"


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> bool:
    """Public unicast addresses always; other non-link-local ones with ``allow_private``."""
    return refusal(ip, allow_private) is None


def check_url(url: str, allow_private: bool = False) -> SplitResult:
    """The parts of ``url``; ``Refused`` unless it is http(s) with a host. A literal IP
    address is checked now, a name when the connection is made."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise Refused("the URL has no host")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise Refused("the URL has an invalid port") from None
    if not (host[0].isdigit() or ":" in host):  # a name, not an address
        return parts
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return parts
    why = refusal(ip, allow_private)
    if why:
        raise Refused(f"{ip} is {why}")
    return parts


def connect_checked(host: str, port: int, timeout: float | None, allow_private: bool) -> socket.socket:
    """Resolve ``host``, refuse it if any address is not allowed, connect to a checked one."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        why = refusal(ip, allow_private)
        if why:
            raise Refused(f"{host} resolves to {ip}, {why}")
    error: OSError = OSError(f"{host}: no address")
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


class _OneWrite(http.client.HTTPConnection):
    """Sends the head and a bytes body in one write (http.client writes them apart,
    which costs a second wake-up of the peer per request: a third of the time here)."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked:
            return super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
        buffer.extend((b"", b""))
        data = b"\r\n".join(buffer) + message_body
        del buffer[:]
        self.send(data)


class _Connection(_OneWrite):
    allow_private = False

    def connect(self) -> None:
        self.sock = connect_checked(self.host, self.port, self.timeout, self.allow_private)


class _TLSConnection(_OneWrite, http.client.HTTPSConnection):
    allow_private = False
    tls: ssl.SSLContext

    def connect(self) -> None:
        sock = connect_checked(self.host, self.port, self.timeout, self.allow_private)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


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


#: reads, from a failed answer, the seconds the provider asked to wait (None: it did not say)
WaitReader = Callable[[Response], float | None]


class HttpClient:
    """Keep-alive connections, one per (thread, scheme, host, port); thread-safe."""

    def __init__(self, allow_private: bool = False, timeout: float = 10.0, user_agent: str = "ceap",
                 tls: ssl.SSLContext | None = None):
        self.allow_private = allow_private
        self.timeout = timeout
        self.user_agent = user_agent
        self.tls = tls or ssl.create_default_context()
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HttpClient(allow_private={self.allow_private}, timeout={self.timeout})"

    def _connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str, int | None], http.client.HTTPConnection] = \
            self._local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, host, port))
        if conn is not None and conn.sock is not None and _dropped(conn.sock):
            conn.close()
        if conn is None:
            if scheme == "https":
                tls_conn = _TLSConnection(host, port, timeout=self.timeout, context=self.tls)
                tls_conn.tls = self.tls
                conn = tls_conn
            else:
                conn = _Connection(host, port, timeout=self.timeout)
            conn.allow_private = self.allow_private  # type: ignore[attr-defined]
            pool[(scheme, host, port)] = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        """One request; raises ``Refused``, ``TimeoutError``, ``OSError`` or ``http.client.HTTPException``."""
        parts = check_url(url, self.allow_private)
        conn = self._connection(parts.scheme, parts.hostname or "", parts.port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, path, body=body, headers={"User-Agent": self.user_agent, **(headers or {})})
            answer = conn.getresponse()
            data = answer.read(MAX_BODY)
            if answer.will_close or (not answer.isclosed() and answer.read(1)):  # or a longer body
                conn.close()
        except BaseException:
            conn.close()
            raise
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


def _dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable was closed by the peer (or sent junk)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def guarded_client(allow_private: bool = False, timeout: float = 10.0) -> HttpClient:
    """A client that applies the SSRF guard at every connection (see the module doc)."""
    return HttpClient(allow_private=allow_private, timeout=timeout)


def body_retry_after(field: str = "retry_after", scale: float = 1.0) -> WaitReader:
    """A ``WaitReader`` for providers that put the wait in a JSON body: the number under the
    top-level ``field``, times ``scale`` (``0.001`` for milliseconds). Discord answers a 429
    with ``{"retry_after": 1.5, ...}``: ``retry_after=body_retry_after()``."""

    def read(response: Response) -> float | None:
        value = response.json()[field]
        return float(value) * scale if isinstance(value, int | float) else None

    return read


def read_wait(retry_after: WaitReader | None, response: Response) -> float | None:
    """What ``retry_after`` reads from ``response``: None when it is not given, fails (a body
    that is not JSON, a missing field) or gives anything but a finite number ≥ 0."""
    if retry_after is None:
        return None
    try:
        wait = retry_after(response)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < float("inf"):
        return None
    return float(wait)


def result_for(key: str, response: Response, provider_id: str | None = None,
               retry_after: WaitReader | None = None) -> SendResult:
    """2xx sent; 3xx and 4xx permanent (but 408, 425, 429); 5xx retryable; status only in
    errors. A retryable answer waits what ``retry_after`` reads from it, else its
    ``Retry-After``, else ``DEFAULT_THROTTLE`` (one second) for a 429."""
    status = response.status
    if 200 <= status < 300:
        return SendResult(key, "sent", provider_id=provider_id)
    if 300 <= status < 400:
        return SendResult(key, "failed", error=f"HTTP {status}: redirects are not followed")
    wait = read_wait(retry_after, response) if is_retryable(status) else None
    return http_failure(key, status, response.headers, f"HTTP {status}", wait=wait)


def failure_for(key: str, exc: BaseException, timeout: float) -> SendResult:
    """A request that got no answer: refused by the guard (permanent) or unreachable (retryable)."""
    if isinstance(exc, Refused):
        return SendResult(key, "failed", error=f"refused: {exc}")
    if isinstance(exc, TimeoutError):
        return SendResult(key, "failed", error=f"{UNREACHABLE} time-out after {timeout:g} s", retryable=True)
    return SendResult(key, "failed", error=f"{UNREACHABLE} {type(exc).__name__}", retryable=True)


def try_request(client: HttpClient, method: str, url: str, body: bytes | None,
                headers: Mapping[str, str], key: str) -> Response | SendResult:
    """The ``Response`` whatever its status, or the failure to get one as a ``SendResult``
    (refused by the guard: permanent; time-out or connection failure: retryable). For
    channels that read the body, e.g. providers that answer errors with a 200."""
    try:
        return client.request(method, url, body, headers)
    except (Refused, OSError, http.client.HTTPException) as exc:
        return failure_for(key, exc, client.timeout)


def send_request(client: HttpClient, method: str, url: str, body: bytes | None,
                 headers: Mapping[str, str], key: str,
                 provider_id: Callable[[Response], str | None] | None = None,
                 retry_after: WaitReader | None = None) -> SendResult:
    """One request as a ``SendResult``; ``provider_id`` reads the id from a 2xx answer (a
    ``ValueError``, ``KeyError`` or ``TypeError`` it raises gives no id), ``retry_after``
    the wait from a retryable one (see ``result_for``)."""
    response = try_request(client, method, url, body, headers, key)
    if isinstance(response, SendResult):
        return response
    result = result_for(key, response, retry_after=retry_after)
    if result.status == "sent" and provider_id is not None:
        try:
            pid = provider_id(response)
        except (ValueError, KeyError, TypeError):
            pid = None
        return SendResult(key, "sent", provider_id=pid)
    return result


def send_json(client: HttpClient, url: str, payload: Any, headers: Mapping[str, str], key: str,
              provider_id: Callable[[Response], str | None] | None = None,
              retry_after: WaitReader | None = None) -> SendResult:
    """POST ``payload`` as JSON (see ``send_request``)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return send_request(client, "POST", url, body, {"Content-Type": "application/json", **headers},
                        key, provider_id, retry_after)


class HttpConfig(ExternalConfig):
    """Fields of a channel that POSTs over ``guarded_client``."""

    type: str
    allow_private: bool = Field(False, description="allow loopback and private targets (self-hosted)")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds to connect, and to wait for each read")


HC = TypeVar("HC", bound=HttpConfig)


class HttpChannel(ExternalChannel[HC]):
    """An ``ExternalChannel`` holding a ``guarded_client`` (``self.client``)."""

    def __init__(self, config: HC, context: Any = None):
        super().__init__(config, context)
        self.client = guarded_client(config.allow_private, config.timeout)

    def close(self) -> None:
        super().close()
        self.client.close()


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what may be printed of a URL that can hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


__all__ = ["DEFAULT_THROTTLE", "MAX_BODY", "UNREACHABLE", "HttpChannel", "HttpClient", "HttpConfig",
           "Refused", "Response", "WaitReader", "address_allowed", "body_retry_after", "check_url",
           "connect_checked", "failure_for", "guarded_client", "halts", "http_failure", "origin",
           "parse_retry_after", "read_wait", "refusal", "result_for", "send_json", "send_request",
           "try_request"]

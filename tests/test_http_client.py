"""The channels' HTTP client (ceap.channels.http_client) against raw local servers
that answer exactly as scripted: chunked and read-until-close bodies, Connection:
close, a kept-alive connection the server drops while idle, a time-out, a 429,
bodies past MAX_BODY, answers cut short or not HTTP, and what goes on the wire."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ceap.channels.base import SendResult
from ceap.channels.http_client import MAX_BODY, HttpClient, ProtocolError
from ceap.channels.http_common import failure_for, send_request, try_request
from tests.channel_helpers import self_signed_cert

Handler = Callable[[socket.socket, "RawServer"], None]


class RawServer:
    """Accepts connections on 127.0.0.1 and runs ``handler(conn, server)`` on each in a thread;
    ``requests`` holds every request read with ``read``, ``connections`` counts connections."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.release = threading.Event()  # set when the test ends: a handler waiting on it returns
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client went away
            self.handler(conn, self)

    def read(self, conn: socket.socket) -> bytes | None:
        """One request (head and Content-Length body), or None when the client closed."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        return self.requests[-1]

    def close(self) -> None:
        self.release.set()
        self._stop.set()
        self._listener.close()
        self._thread.join(2)


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def client() -> Iterator[HttpClient]:
    http = HttpClient(allow_private=True, timeout=5)
    yield http
    http.close()


def keep_answering(*answers: bytes) -> Handler:
    """Answer each request on a connection with the next of ``answers`` (the last one repeats)."""

    def handler(conn: socket.socket, server: RawServer) -> None:
        i = 0
        while server.read(conn) is not None:
            conn.sendall(answers[min(i, len(answers) - 1)])
            i += 1

    return handler


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_chunked_answer_is_joined_and_the_connection_kept(serve: Any, client: HttpClient) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
               b"5\r\n{\"a\":\r\n4;ext=1\r\n 1, \r\n6\r\n\"b\": 2\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n")
    server = serve(keep_answering(chunked))
    first = client.request("POST", server.url + "/a", b"{}")
    second = client.request("POST", server.url + "/b", b"{}")
    assert first.status == second.status == 200
    assert first.json() == {"a": 1, "b": 2} and first.headers["content-type"] == "application/json"
    assert server.connections == 1


def test_connection_close_opens_a_new_connection_for_the_next_request(serve: Any, client: HttpClient) -> None:
    server = serve(keep_answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
    assert [client.request("POST", server.url + "/", b"x").body for _ in range(3)] == [b"ok"] * 3
    assert server.connections == 3


def test_http_1_0_and_a_body_until_close(serve: Any, client: HttpClient) -> None:
    def until_close(conn: socket.socket, server: RawServer) -> None:
        server.read(conn)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"y" * 5000)
        conn.shutdown(socket.SHUT_WR)

    server = serve(until_close)
    for _ in range(2):
        response = client.request("GET", server.url + "/")
        assert response.status == 200 and response.body == b"y" * 5000
    assert server.connections == 2


def test_a_kept_alive_connection_the_server_dropped_while_idle_is_replaced(serve: Any,
                                                                          client: HttpClient) -> None:
    def one_then_close(conn: socket.socket, server: RawServer) -> None:
        server.read(conn)
        conn.sendall(OK)  # keep-alive by HTTP/1.1 rules, then the server closes it while idle

    server = serve(one_then_close)
    client.request("POST", server.url + "/", b"1")
    for _ in range(500):  # wait until the FIN has arrived (no wall-clock assertion)
        if client._all[0].sock is None or not _readable(client._all[0].sock):
            threading.Event().wait(0.01)
            continue
        break
    assert client.request("POST", server.url + "/", b"2").body == b"ok"
    assert server.connections == 2 and len(server.requests) == 2


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_a_slow_server_hits_the_timeout_and_the_result_is_retryable(serve: Any) -> None:
    def silent(conn: socket.socket, server: RawServer) -> None:
        server.read(conn)
        server.release.wait(10)  # never answers while the test runs

    server = serve(silent)
    slow = HttpClient(allow_private=True, timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            slow.request("POST", server.url + "/", b"{}")
        result = send_request(slow, "POST", server.url + "/", b"{}", {}, "k1")
    finally:
        slow.close()
    assert result.retryable and result.error == "unreachable: time-out after 0.2 s"
    assert result == failure_for("k1", TimeoutError(), 0.2)


def test_a_429_with_retry_after_then_a_200_on_the_same_connection(serve: Any, client: HttpClient) -> None:
    server = serve(keep_answering(
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 17\r\n\r\n"
        b"{\"error\":\"slow\"}\n",
        OK))
    throttled = send_request(client, "POST", server.url + "/", b"{}", {}, "k1")
    sent = send_request(client, "POST", server.url + "/", b"{}", {}, "k2")
    assert (throttled.status, throttled.retryable, throttled.retry_after) == ("failed", True, 7.0)
    assert throttled.error == "HTTP 429" and sent.status == "sent"
    assert server.connections == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_past_max_body_is_cut_and_its_connection_closed(serve: Any, client: HttpClient,
                                                               chunked: bool) -> None:
    big = bytes(range(256)) * (MAX_BODY // 256 * 2)
    if chunked:
        parts = [big[i:i + 5000] for i in range(0, len(big), 5000)]
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    else:
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    server = serve(keep_answering(answer))
    bodies = [client.request("GET", server.url + "/").body for _ in range(2)]
    assert bodies == [big[:MAX_BODY]] * 2
    assert server.connections == 2


def test_a_body_in_many_small_pieces_arrives_whole(serve: Any, client: HttpClient) -> None:
    body = b"z" * 60_000

    def dribble(conn: socket.socket, server: RawServer) -> None:
        while server.read(conn) is not None:
            data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            for i in range(0, len(data), 7000):
                conn.sendall(data[i:i + 7000])

    server = serve(dribble)
    assert [client.request("GET", server.url + "/").body for _ in range(2)] == [body] * 2
    assert server.connections == 1


def test_interim_100_continue_is_skipped(serve: Any, client: HttpClient) -> None:
    server = serve(keep_answering(b"HTTP/1.1 100 Continue\r\n\r\n"
                                  b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"))
    assert [client.request("POST", server.url + "/", b"{}").status for _ in range(2)] == [201, 201]
    assert server.connections == 1


@pytest.mark.parametrize(("answer", "error"), [
    (b"", "unreachable: RemoteDisconnected"),                                           # closed, no answer
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "unreachable: IncompleteRead"),
    (b"SMTP ready\r\n\r\n", "unreachable: ProtocolError"),                               # not HTTP
])
def test_an_answer_cut_short_or_not_http_is_retryable(serve: Any, client: HttpClient, answer: bytes,
                                                      error: str) -> None:
    def once(conn: socket.socket, server: RawServer) -> None:
        server.read(conn)
        conn.sendall(answer)

    server = serve(once)
    result = try_request(client, "POST", server.url + "/", b"{}", {}, "k")
    assert isinstance(result, SendResult) and result.error == error and result.retryable
    assert client._all[0].sock is None  # the failed connection is closed


def test_junk_after_an_answer_closes_the_connection(serve: Any, client: HttpClient) -> None:
    server = serve(keep_answering(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra", OK))
    assert client.request("POST", server.url + "/", b"1").body == b"ok"
    assert client.request("POST", server.url + "/", b"2").body == b"ok"
    assert server.connections == 2


def test_an_answer_head_past_max_head_is_refused(serve: Any, client: HttpClient) -> None:
    def huge_head(conn: socket.socket, server: RawServer) -> None:
        server.read(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(300):
            conn.sendall(b"X-Pad: " + b"p" * 1000 + b"\r\n")

    server = serve(huge_head)
    with pytest.raises(ProtocolError, match="head is longer"):
        client.request("GET", server.url + "/")


def test_the_request_goes_out_in_one_write_with_the_usual_headers(serve: Any, client: HttpClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(keep_answering(OK))
    writes: list[bytes] = []
    client.request("GET", server.url + "/warm")
    conn = client._all[0]
    real = conn.sock
    assert real is not None

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def sendall(self, data: bytes) -> None:
            writes.append(data)
            real.sendall(data)

    conn.sock = Counting()  # type: ignore[assignment]
    client.request("POST", server.url + "/p/a%20b?q=1&r=2", b'{"x": 1}',
                   {"X-Key": "v", "Content-Type": "application/json"})
    client.request("POST", server.url + "/empty", None, {"user-agent": "mine", "Host": "example.com"})
    conn.sock = real
    port = server.url.rsplit(":", 1)[1]
    assert writes == server.requests[1:] == [
        b"POST /p/a%20b?q=1&r=2 HTTP/1.1\r\nHost: 127.0.0.1:" + port.encode() + b"\r\n"
        b"Accept-Encoding: identity\r\nUser-Agent: ceap\r\nX-Key: v\r\nContent-Type: application/json\r\n"
        b"Content-Length: 8\r\n\r\n{\"x\": 1}",
        b"POST /empty HTTP/1.1\r\nAccept-Encoding: identity\r\nuser-agent: mine\r\nHost: example.com\r\n"
        b"Content-Length: 0\r\n\r\n"]
    assert b"Content-Length" not in server.requests[0]  # a GET without a body has none
    assert server.connections == 1


@pytest.mark.parametrize("headers", [{"X-Evil": "a\r\nX-Injected: 1"}, {"X-Evil": "a\nb"},
                                     {"Bad:Name": "v"}, {"X-Name": "caf\u00e9\u2603"}])
def test_a_header_that_would_break_the_request_is_refused_before_sending(serve: Any, client: HttpClient,
                                                                         headers: dict[str, str]) -> None:
    server = serve(keep_answering(OK))
    with pytest.raises(ValueError):
        client.request("POST", server.url + "/", b"{}", headers)
    assert server.connections == 0


def test_tls_with_a_self_signed_certificate(tmp_path: Path, serve: Any) -> None:
    import ssl

    cert, key = self_signed_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    plain = keep_answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                           b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\ndef")

    def handler(conn: socket.socket, server: RawServer) -> None:
        with tls.wrap_socket(conn, server_side=True) as wrapped:
            plain(wrapped, server)

    server = serve(handler)
    url = server.url.replace("http://127.0.0.1", "https://localhost") + "/hook"
    trusted = HttpClient(allow_private=True, timeout=5, tls=ssl.create_default_context(cafile=str(cert)))
    try:
        bodies = [trusted.request("POST", url, b"{}").body for _ in range(3)]
    finally:
        trusted.close()
    assert bodies == [b"abc", b"def", b"abc"]  # close after the second: a new connection
    assert server.connections == 2
    untrusted = HttpClient(allow_private=True, timeout=5)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusted.request("POST", url, b"{}")
    finally:
        untrusted.close()


@pytest.mark.parametrize("tail", ["/a/b?x=1&y=2", "?only=query", "", "#frag", "/p#f?x", "/p?q#f", "/a%2Fb",
                                  "/with\ttab"])
def test_a_url_of_a_checked_origin_splits_as_urlsplit_does(tail: str) -> None:
    from urllib.parse import urlsplit

    http = HttpClient(allow_private=True)
    for url in ("http://127.0.0.1:8080/first", "http://127.0.0.1:8080" + tail):  # the second: cached origin
        origin, path = http._target(url)
    parts = urlsplit("http://127.0.0.1:8080" + tail)
    assert origin == ("http", "127.0.0.1", 8080)
    assert path == (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def test_the_origin_cache_keeps_the_guard() -> None:
    from ceap.channels.ssrf import Refused

    http = HttpClient(allow_private=False)
    for url in ("http://10.0.0.1/a", "http://10.0.0.1/b", "http://169.254.169.254/x"):
        with pytest.raises(Refused):
            http._target(url)
    assert HttpClient(allow_private=True)._target("http://10.0.0.1/b")[0] == ("http", "10.0.0.1", None)


def test_answers_without_a_body_keep_the_connection(serve: Any, client: HttpClient) -> None:
    server = serve(keep_answering(b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\n\r\n",
                                  b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))  # the last: a HEAD's
    assert [client.request("POST", server.url + "/", b"{}").status for _ in range(2)] == [204, 304]
    head = client.request("HEAD", server.url + "/")
    assert (head.status, head.headers["content-length"], head.body) == (200, "5", b"")
    assert server.connections == 1

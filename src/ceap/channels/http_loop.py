"""An HTTP channel's lanes driven by one thread: non-blocking waits on a selector,
and, with a journal, its commits made in that same thread.

``drive`` sends ``todo`` (indexes into ``messages``) on up to ``concurrency``
lanes (``Lane``: connections of their own). It goes round:

1. take the next messages for the free lanes and build their requests
   (``channel.request``);
2. with a journal (its batch form, ``BatchJournal``), commit in one
   transaction the results gathered since the last commit and the begins of
   these messages (``end_many`` then ``begin_many``): a message is written to
   its socket only once its begin is committed, and a lane's previous result
   is in the same commit or an earlier one, so a killed process leaves at most
   ``concurrency`` attempts ``sending``, as with threaded lanes;
3. write each granted request (connecting first if needed: the SSRF guard,
   TLS for https; a connection is made blocking, bounded by the time-out);
4. wait on the selector for answers, parse what each readable socket holds
   (httptools) and turn each complete answer into a result
   (``channel.answer``); go back to 1 once ``gather`` of the lanes busy at the
   last commit have answered (1.0: every one, a commit per round), or
   ``linger`` seconds after the first answer, or when no lane is busy.

Each request has the client's ``timeout`` from its write, and again from
each read that brings bytes (as ``HttpClient.request``): past it, its
connection is closed and the result is the time-out's. Results map as on the
threaded path (``failure_for`` for no answer; an exception raised building a
request or reading an answer fails the message retryably; a result given
instead of a request, or such a failure, counts as an attempt, as when
``deliver_one`` gives it). Once a result ``halts`` (unreachable, or a wait asked), the
messages not yet begun fail retryably with that wait. A commit that fails
stops the loop and raises (attempts in flight stay open for crash recovery).
"""

from __future__ import annotations

import http.client
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from ceap.channels.base import Message, SendResult
from ceap.channels.http_client import HttpClient, Response, _Answer, _Connection, _head
from ceap.channels.ssrf import Refused

NO_ANSWER = (Refused, OSError, http.client.HTTPException)


class HttpRequest(NamedTuple):
    """What a loop-driven channel sends for one message."""

    method: str
    url: str
    body: bytes | None
    headers: Mapping[str, str]


class BatchJournal(Protocol):
    """The batch form of a ``SendJournal``, committed in the caller's thread."""

    def end_many(self, ended: Sequence[tuple[Message, SendResult]]) -> None: ...

    def begin_many(self, messages: Sequence[Message]) -> list[bool]: ...

    def flush(self) -> None: ...


class LoopChannel(Protocol):
    """What ``drive`` needs of a channel (``HttpChannel`` has it)."""

    def request(self, message: Message) -> HttpRequest | SendResult: ...

    def answer(self, message: Message, response: Response) -> SendResult: ...

    def settled(self, message: Message, result: SendResult) -> bool: ...


class Lane:
    """One request at a time on connections of its own (one per origin, closed with
    the client), the socket read by its caller
    when a selector says it is readable: ``start`` sends, ``read`` feeds the answer.
    A plain TCP socket is made non-blocking once connected (the caller bounds the wait
    for an answer; a write the send buffer cannot take at once waits, bounded by the
    time-out); a TLS socket keeps the time-out mode, so a record still in flight is
    read blocking, bounded by the time-out."""

    __slots__ = ("_client", "_pool", "answer", "conn")

    def __init__(self, client: HttpClient):
        self._client = client
        self._pool: dict[tuple[str, str, int | None], _Connection] = {}
        self.conn: _Connection | None = None
        self.answer: _Answer | None = None

    def start(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str],
              live: socket.socket | None = None) -> socket.socket:
        """Connect if needed (guarded, TLS for https), send the request in one ``sendall``
        and return the socket its answer will come on. Raises as ``HttpClient.request``;
        the connection is closed on a failure. ``live``: a socket the caller watches and
        saw no close on since its last answer; if it is the connection's, the check that
        the peer has not closed it (a ``select``) is skipped."""
        client = self._client
        origin, path = client._target(url)
        conn = self._pool.get(origin)
        if conn is None:
            conn = self._pool[origin] = _Connection(*origin, client=client)
            with client._lock:
                client._all.append(conn)
        head = _head(method, path, conn, client.user_agent, headers, body)
        self.conn, self.answer = conn, _Answer(method == "HEAD")
        data = head + body if body else head
        try:
            sock = conn.sock if live is not None and conn.sock is live else conn.open()
            if isinstance(sock, ssl.SSLSocket):  # TLS keeps the time-out mode (a blocking write)
                sock.sendall(data)
                return sock
            if sock.gettimeout() != 0.0:  # plain TCP is non-blocking here: no poll before each call
                sock.setblocking(False)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):  # the send buffer is full: wait for it, bounded by the time-out
                sock.settimeout(client.timeout)
                try:
                    sock.sendall(memoryview(data)[sent:])
                finally:
                    sock.setblocking(False)
        except BaseException:
            self.abort()
            raise
        return sock

    def read(self) -> Response | None:
        """Read what the socket holds (it is readable); the ``Response`` once complete, else
        None. Raises as ``HttpClient.request``; the connection is closed on a failure."""
        conn, answer = self.conn, self.answer
        assert conn is not None and answer is not None and conn.sock is not None
        sock = conn.sock
        try:
            while not conn.read_some(sock, answer):
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    return None
        except BlockingIOError:  # nothing to read after all (a plain socket is non-blocking)
            return None
        except BaseException:
            self.abort()
            raise
        self.conn = self.answer = None
        return conn.finish(answer)

    def abort(self) -> None:
        """Give up the request in progress (a time-out, a failure): its connection is closed."""
        if self.conn is not None:
            self.conn.close()
        self.conn = self.answer = None


class _Slot:
    """A lane and the message it is sending."""

    __slots__ = ("at", "deadline", "lane", "message", "sock")

    def __init__(self, lane: Lane):
        self.lane = lane
        self.at = -1
        self.message: Message | None = None
        self.sock: Any = None  # the socket registered with the selector for this slot
        self.deadline = 0.0


def failure(m: Message, exc: BaseException) -> SendResult:
    """What the threaded lanes answer for an exception (one message's bug is not the batch's)."""
    return SendResult(m.idempotency_key, "failed", error=f"{type(exc).__name__}: {exc}", retryable=True)


def drive(channel: LoopChannel, lanes: list[Lane], messages: Sequence[Message], todo: list[int],
          results: list[SendResult | None], journal: BatchJournal | None, timeout: float,
          on_no_answer: Callable[[str, BaseException], SendResult],
          gather: float = 1.0, linger: float = 0.002) -> None:
    """Send ``messages[i]`` for each ``i`` in ``todo`` (see the module doc); each result is
    put in ``results[i]``."""
    slots = [_Slot(lane) for lane in lanes[:max(1, min(len(lanes), len(todo)))]]
    free: list[_Slot] = list(reversed(slots))
    queue = deque(todo)
    ended: list[tuple[Message, SendResult]] = []
    halted: SendResult | None = None
    busy = 0
    selector = selectors.DefaultSelector()
    clock = time.monotonic

    def done(slot: _Slot, result: SendResult) -> None:
        nonlocal busy, halted
        m = slot.message
        assert m is not None
        results[slot.at] = result
        if channel.settled(m, result) and halted is None:
            halted = result
        ended.append((m, result))
        slot.message, slot.at = None, -1
        busy -= 1
        free.append(slot)
        if slot.sock is not None and slot.sock.fileno() < 0:  # its connection was closed
            selector.unregister(slot.sock)
            slot.sock = None

    try:
        while queue or busy:
            # 1. the next messages for the free lanes
            starts: list[tuple[int, Message, HttpRequest]] = []
            while queue and len(starts) < len(free):
                i = queue.popleft()
                m = messages[i]
                if halted is not None:
                    results[i] = SendResult(m.idempotency_key, "failed",
                                            error=f"not attempted: {halted.error}",
                                            retry_after=halted.retry_after, retryable=True)
                    continue
                try:
                    request = channel.request(m)
                except Exception as exc:
                    request = failure(m, exc)
                if isinstance(request, SendResult):  # an attempt, as ``deliver_one``'s answer
                    results[i] = request
                    ended.append((m, request))
                    if channel.settled(m, request) and halted is None:
                        halted = request
                    continue
                starts.append((i, m, request))
            # 2. one commit: the results so far, the begins of these
            if journal is not None:
                if ended:
                    journal.end_many(ended)
                    ended = []
                granted = journal.begin_many([m for _, m, _ in starts]) if starts else []
            else:
                ended = []
                granted = [True] * len(starts)
            # 3. write the granted requests
            now = clock()
            for (i, m, request), ok in zip(starts, granted, strict=True):
                if not ok:
                    results[i] = SendResult(m.idempotency_key, "failed", retryable=True,
                                            error="not attempted: another worker took it over")
                    continue
                slot = free.pop()
                slot.message, slot.at = m, i
                busy += 1
                try:
                    sock = slot.lane.start(*request, live=slot.sock)
                except NO_ANSWER as exc:
                    done(slot, on_no_answer(m.idempotency_key, exc))
                    continue
                except Exception as exc:
                    done(slot, failure(m, exc))
                    continue
                if slot.sock is not sock:
                    if slot.sock is not None:
                        selector.unregister(slot.sock)
                    selector.register(sock, selectors.EVENT_READ, slot)
                    slot.sock = sock
                slot.deadline = now + timeout
            # 4. the answers, until enough are in
            if not busy:
                continue
            want = max(1, min(busy, round(busy * gather))) if journal is not None else 1
            answered, first = 0, 0.0
            while busy and answered < want:
                now = clock()
                wait = min(s.deadline for s in slots if s.message is not None) - now
                if answered:
                    wait = min(wait, first + linger - now)
                    if wait <= 0:
                        break
                for key, _ in selector.select(max(wait, 0.0)):
                    slot = key.data
                    if slot.message is None or key.fileobj is not slot.sock:  # idle: the peer closed
                        selector.unregister(key.fileobj)
                        if slot.sock is key.fileobj:
                            slot.sock = None
                        continue
                    m = slot.message
                    try:
                        response = slot.lane.read()
                    except NO_ANSWER as exc:
                        response = on_no_answer(m.idempotency_key, exc)
                    except Exception as exc:
                        response = failure(m, exc)
                    if response is None:
                        slot.deadline = clock() + timeout
                        continue
                    if isinstance(response, Response):
                        try:
                            result = channel.answer(m, response)
                        except Exception as exc:
                            result = failure(m, exc)
                    else:
                        result = response
                    done(slot, result)
                    if not answered:
                        first = clock()
                    answered += 1
                now = clock()
                for slot in slots:
                    if slot.message is not None and slot.deadline <= now:
                        slot.lane.abort()
                        done(slot, on_no_answer(slot.message.idempotency_key, TimeoutError()))
                        answered += 1
        if journal is not None and ended:
            journal.end_many(ended)
            journal.flush()
    finally:
        for slot in slots:
            if slot.message is not None:  # the loop failed: the request is given up
                slot.lane.abort()
        selector.close()


__all__ = ["BatchJournal", "HttpRequest", "Lane", "LoopChannel", "drive", "failure"]

"""The serving API's two hot reads on PostgreSQL, run on the event loop.

A customer's servable candidates and their in-app inbox are read the same way as
``PostgresStore.candidates`` and ``inbox_list`` (same rows, same order), and given as
the API shows them, with much less work per request:

* one statement per request, prepared (at the protocol level) when a connection
  opens; PostgreSQL returns the whole answer as one JSON value (the rows as
  arrays of the API's fields, times as ISO 8601 text in UTC), which one ``orjson``
  call decodes: no row or column decoding in Python, no time conversions;
* on the event loop, straight on libpq (psycopg's ``pgconn``: send, wait for the
  socket, read), without psycopg's cursor layers and without a hop to a thread and
  back (nor the contention for the GIL between the loop and a read thread);
* on connections of their own in libpq's pipeline mode: reads in flight together
  share a connection (up to ``PIPELINE_DEPTH`` each before another is opened, at most
  ``CEAP_PG_SERVING_CONNECTIONS``, default 10 per process, opened on first use), each
  read with its own sync point, so an error or a cancelled read is that read's alone.
  A connection that fails is closed, not reused, and its reads in flight fail.

The JSON is the same the API makes from ``candidates()``: numbers and text as
PostgreSQL writes them into JSON decode to the same values (``extra_float_digits`` is
set to 1: shortest exact floats; a score is made a float again, from ``1`` or
``"NaN"``), the JSON columns are embedded as they are stored, and
times are written as Python's ``isoformat`` writes a UTC time (``_utc``, ``_iso``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

from ceap.store.schema import loads

#: connections the hot reads of one process (one server worker) open at most
CONNECTIONS_ENV = "CEAP_PG_SERVING_CONNECTIONS"
DEFAULT_CONNECTIONS = 10
#: reads in flight on each open connection before another one is opened
PIPELINE_DEPTH = 4

#: what the API shows of a candidate (``CandidateOut``), in this order
CANDIDATE_FIELDS = ("id", "program", "customer_id", "subject_id", "action_type", "channels",
                    "score", "priority", "model", "payload", "context", "status",
                    "not_before", "expires_at")
#: what the API shows of an inbox message (``InboxItemOut``)
INBOX_FIELDS = ("id", "idempotency_key", "program", "title", "body", "payload", "created_at", "read")


def _utc(column: str) -> str:
    """SQL: a ``timestamptz`` as its UTC wall time (a ``timestamp``), which PostgreSQL
    writes in JSON as ``2026-12-07T12:24:04.84`` whatever the session's time zone."""
    return f"{column} AT TIME ZONE 'UTC'"


def _iso(time: str) -> str:
    """A ``_utc`` time from the JSON as ``datetime.isoformat()`` writes that UTC time: the
    fraction of a second in six digits (none for a whole second) and ``+00:00``. Cheaper
    here than ``to_char`` in the database (bench/README.md, issue 11)."""
    return time + "+00:00" if len(time) == 19 else time.ljust(26, "0") + "+00:00"


_ORDER = "priority DESC, score DESC, id"
_SERVABLE = (
    "SELECT json_agg(json_build_array(id, program, customer_id, subject_id, action_type, "
    "channels, score, "
    f"priority, model, payload, context, status, {_utc('not_before')}, {_utc('expires_at')}) "
    f"ORDER BY {_ORDER})::text FROM (SELECT id, program, customer_id, subject_id, "
    "action_type, channels, score, priority, model, payload, context, status, not_before, "
    "expires_at FROM candidates WHERE tenant_id = $1 AND customer_id = $2 "
    "AND status IN ('pending', 'dispatched', 'sent') AND NOT holdout "
    "AND not_before <= $3 AND expires_at > $3{extra} "
    f"ORDER BY {_ORDER} LIMIT $4) c")
#: the candidates statement for (program given, channel given): $5 and $6 in that order
CANDIDATES_SQL = {
    (program, channel): _SERVABLE.format(extra=(" AND program = $5" if program else "") + (
        f" AND channels ? ${5 + program}" if channel else ""))
    for program in (False, True) for channel in (False, True)
}
_INBOX = ("SELECT json_agg(json_build_array(id, idempotency_key, program, title, body, payload, "
          f"{_utc('created_at')}, read_at IS NOT NULL) ORDER BY created_at DESC, id DESC)::text "
          "FROM inbox WHERE tenant_id = $1 AND customer_id = $2{extra}")
#: the inbox statement, all messages (False) or unread ones (True)
INBOX_SQL = {unread: _INBOX.format(extra=" AND read_at IS NULL" if unread else "")
             for unread in (False, True)}
_NAMES = {sql: f"ceap_serving_{i}".encode()
          for i, sql in enumerate([*CANDIDATES_SQL.values(), *INBOX_SQL.values()])}


def _candidate(id: int, program: str, customer_id: str, subject_id: str | None, action_type: str,
               channels: list[str], score: float | str | None, priority: int, model: str | None,
               payload: Any, context: Any, status: str, not_before: str,
               expires_at: str) -> dict[str, Any]:
    """A candidate as the API shows it, from its ``CANDIDATES_SQL`` array (one call: no
    ``zip`` and no updates of a dict, a third of the time of those on this path)."""
    return {"id": id, "program": program, "customer_id": customer_id, "subject_id": subject_id,
            "action_type": action_type, "channels": channels,
            "score": None if score is None else float(score),  # JSON has 1.0 as 1, NaN as "NaN"
            "priority": priority, "model": model, "payload": payload or {},
            "context": context or {}, "status": status, "not_before": _iso(not_before),
            "expires_at": _iso(expires_at)}


def _inbox_item(id: int, idempotency_key: str, program: str, title: str, body: str, payload: Any,
                created_at: str, read: bool) -> dict[str, Any]:
    """An inbox message as the API shows it, from its ``INBOX_SQL`` array."""
    return {"id": id, "idempotency_key": idempotency_key, "program": program, "title": title,
            "body": body, "payload": payload or {}, "created_at": _iso(created_at), "read": read}


def connections_from_env() -> int:
    """``CEAP_PG_SERVING_CONNECTIONS`` (default 10), checked: a whole number from 1 to 100."""
    raw = os.environ.get(CONNECTIONS_ENV, "").strip()
    if not raw:
        return DEFAULT_CONNECTIONS
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ValueError(f"{CONNECTIONS_ENV}={raw!r}: expected a whole number from 1 to 100")
    return int(raw)


def _text(value: str) -> bytes:
    """A text parameter, as psycopg would send it (libpq would cut it at a NUL)."""
    if "\x00" in value:
        raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    return value.encode()


def _running() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Conn:
    """A connection of the hot reads in libpq's pipeline mode: reads are sent without
    waiting for the answers of those before them, each with its own sync point (so one
    read's error is only its own), and answered in the order sent.

    Every statement is prepared when the connection opens (``open``). Its socket stays
    registered with the event loop of its reads (``_listen``), whose reader callback
    (``_readable``) hands each answer to the read that waits for it: a read does not add
    and remove a reader for every wait (about 20 µs of the worker's CPU a read with
    uvloop, bench/README.md, issue 11). It moves to another loop (each test client has
    its own) only with no read in flight; an old loop's callback, if it still fires,
    unregisters itself. A cancelled read's answer is read and dropped: the connection
    goes on. Readable with no read waiting (a notice, or the server closed it): the input
    is consumed there. A connection that fails is marked ``broken``, and its reads in
    flight fail with it."""

    __slots__ = ("broken", "conn", "fd", "found", "inflight", "loop", "pg")

    def __init__(self, conn: psycopg.AsyncConnection[Any]):
        self.conn, self.pg = conn, conn.pgconn
        self.fd = self.pg.socket
        self.loop: asyncio.AbstractEventLoop | None = None  # where the socket is registered
        self.inflight: deque[asyncio.Future[bytes | None]] = deque()  # in the order sent
        self.found: pq.abc.PGresult | None = None  # the first read's result, before its sync
        self.broken = False

    async def open(self) -> None:
        """Prepare every statement (before pipeline mode: one at a time), then enter it."""
        for sql, name in _NAMES.items():
            self.pg.send_prepare(name, sql.encode())
            await self._one_result()
        self.pg.enter_pipeline_mode()

    async def _one_result(self) -> None:
        pg, loop = self.pg, asyncio.get_running_loop()
        while pg.flush():
            await _ready(loop, self.fd, write=True)
        last = None
        while True:
            pg.consume_input()
            while not pg.is_busy():
                found = pg.get_result()
                if found is None:
                    if last is not None and last.status == pq.ExecStatus.FATAL_ERROR:
                        raise error_from_result(last)
                    return
                last = found
            await _ready(loop, self.fd)

    def submit(self, name: bytes, params: list[bytes]) -> asyncio.Future[bytes | None]:
        """Send a read of the prepared ``name`` (on the running loop's thread); its
        future gets the one value it returns (text), None for no row, or its error."""
        loop = self._listen()
        pg = self.pg
        try:
            pg.send_query_prepared(name, params)
            pg.pipeline_sync()
            unsent = pg.flush()
        except Exception:
            self._fail(psycopg.OperationalError("the connection failed"))
            raise
        answer: asyncio.Future[bytes | None] = loop.create_future()
        self.inflight.append(answer)
        if unsent:
            loop.add_writer(self.fd, self._writable, loop)
        return answer

    def _writable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            if self.pg.flush():
                return  # still more to send: called again
        except Exception:
            self._fail(psycopg.OperationalError("the connection failed"))
        loop.remove_writer(self.fd)

    def _listen(self) -> asyncio.AbstractEventLoop:
        """The running loop, with this connection's socket registered on it."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self._unlisten()
            loop.add_reader(self.fd, self._readable, loop)
            self.loop = loop
        return loop

    def _unlisten(self) -> None:
        """Unregister the socket from its loop, where that is safe from here: the running
        loop, or one not running (a closed loop has nothing left to unregister; one
        running in another thread unregisters when its callback next fires)."""
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed() and (loop is _running() or not loop.is_running()):
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.loop:  # registered by a loop the connection has left
            loop.remove_reader(self.fd)
            return
        pg, inflight = self.pg, self.inflight
        try:
            pg.consume_input()  # idle: a notice, or the end of the connection (raises)
            ends = 0
            while inflight and not pg.is_busy():
                found = pg.get_result()
                if found is None:  # the end of one read's results
                    ends += 1
                    if ends > 1:
                        break
                    continue
                ends = 0
                if found.status != pq.ExecStatus.PIPELINE_SYNC:
                    self.found = found
                    continue
                answer, found, self.found = inflight.popleft(), self.found, None
                if answer.done():  # cancelled: its answer is dropped
                    continue
                if found is None or found.status not in _ANSWERED:
                    answer.set_exception(error_from_result(found) if found is not None
                                         and found.status == pq.ExecStatus.FATAL_ERROR
                                         else psycopg.OperationalError("the read was not answered"))
                else:
                    answer.set_result(found.get_value(0, 0) if found.ntuples else None)
        except Exception as exc:  # closed or failed: not to be used again
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Mark the connection broken; its reads in flight fail (on its loop's thread)."""
        self.broken = True
        inflight, self.inflight = self.inflight, deque()
        for answer in inflight:
            if not answer.done():
                error = exc if isinstance(exc, psycopg.Error) else psycopg.OperationalError(str(exc))
                answer.set_exception(error)
        self._unlisten()

    def close(self) -> None:
        """End the libpq connection, its socket unregistered first: here, or on its loop
        when that one runs in another thread (never a closed socket left registered).
        Reads still in flight fail."""
        loop = self.loop
        if loop is not None and not loop.is_closed() and loop.is_running() and loop is not _running():
            try:
                loop.call_soon_threadsafe(self._close_on, loop)
                return
            except RuntimeError:  # closed meanwhile: nothing left registered
                self.loop = None
        self._fail(psycopg.OperationalError("the connection is closed"))
        self.pg.finish()

    def _close_on(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is loop:
            self._fail(psycopg.OperationalError("the connection is closed"))
        self.pg.finish()


class _Turn:
    """A read's wait for a connection being opened."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]):
        self.future = future


_OPEN = object()  # a read's turn to open a connection
_ANSWERED = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool = False) -> None:
    """Until the socket can be read (or written)."""
    done = loop.create_future()
    (loop.add_writer if write else loop.add_reader)(fd, _wake, done)
    try:
        await done
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class PgServingReads:
    """The hot reads of one ``PostgresStore`` (see the module docstring).

    Reads share few connections, each pipelined (``_Conn``): a read goes to the first
    connection of its event loop with fewer than ``PIPELINE_DEPTH`` reads in flight (else
    the least busy), and another connection is opened (up to the size) only when every
    one has ``PIPELINE_DEPTH`` or more. At a
    steady rate one connection per process does the work, so its database process stays
    busy and warm; a burst after a quiet second wakes one database process, not one per
    read in flight (bench/README.md, issue 11). Safe to use from several event loops
    (each test client has its own): a connection serves the reads of one loop at a time."""

    def __init__(self, conninfo: str, clock: Callable[[], datetime], size: int | None = None):
        self._conninfo, self._clock = conninfo, clock
        self._size = size if size is not None else connections_from_env()
        self._conns: list[_Conn] = []  # open (broken ones until next looked at)
        self._opening = 0
        self._turns: list[_Turn] = []  # reads waiting for a connection being opened
        self._lock = threading.Lock()
        self._closed = False

    async def candidates(self, tenant_id: str, customer_id: str, channel: str | None,
                         program: str | None, limit: int) -> list[dict[str, Any]]:
        """What ``candidates(CandidateQuery(..., servable=True))`` finds, as the API shows
        it (``CANDIDATE_FIELDS``; ``payload`` and ``context`` ``{}`` when null)."""
        params = [_text(tenant_id), _text(customer_id), self._clock().isoformat().encode(),
                  str(limit).encode()]
        if program is not None:
            params.append(_text(program))
        if channel is not None:
            params.append(_text(channel))
        rows = await self._rows(CANDIDATES_SQL[program is not None, channel is not None], params)
        return [_candidate(*row) for row in rows]

    async def inbox(self, tenant_id: str, customer_id: str,
                    unread_only: bool) -> list[dict[str, Any]]:
        """What ``inbox_list`` finds, as the API shows it (``INBOX_FIELDS``; ``payload``
        ``{}`` when null)."""
        rows = await self._rows(INBOX_SQL[unread_only], [_text(tenant_id), _text(customer_id)])
        return [_inbox_item(*row) for row in rows]

    async def _rows(self, sql: str, params: list[bytes]) -> list[list[Any]]:
        name = _NAMES[sql]
        while True:
            with self._lock:
                answer = self._submit(name, params)
            if answer is _OPEN:
                await self._open()
            elif isinstance(answer, _Turn):  # try again once a connection is opened (or, one
                # busy with another event loop's reads, a little later)
                await asyncio.wait([answer.future], timeout=0.05)
            else:
                break
        value = await answer  # type: ignore[misc]
        return loads(value) if value is not None else []  # type: ignore[no-any-return]

    def _submit(self, name: bytes, params: list[bytes]) -> Any:
        """Send the read on the best connection (under ``_lock``) and give its future; or
        ``_OPEN``: open a connection first; or a ``_Turn`` to wait for one being opened."""
        if self._closed:
            raise psycopg.OperationalError("the connection is closed")
        loop = asyncio.get_running_loop()
        for conn in [c for c in self._conns if c.broken]:  # failed, or the server closed it
            self._conns.remove(conn)
            conn.close()
        best = None  # the first with room in its pipeline (the same one while it has
        for conn in self._conns:  # room, so it stays warm), else the least busy; of this
            if conn.loop is loop or not conn.inflight:  # loop's, or idle ones (they move)
                if len(conn.inflight) < PIPELINE_DEPTH:
                    best = conn
                    break
                if best is None or len(conn.inflight) < len(best.inflight):
                    best = conn
        room = len(self._conns) + self._opening < self._size
        if room and (best is None or len(best.inflight) >= PIPELINE_DEPTH) and (
                len(self._turns) >= self._opening * PIPELINE_DEPTH):  # not enough coming
            self._opening += 1
            return _OPEN
        if best is None:  # all being opened, or busy with another loop's reads
            turn = _Turn(loop.create_future())
            self._turns.append(turn)
            return turn
        try:
            return best.submit(name, params)
        except Exception:
            self._conns.remove(best)
            raise

    async def _open(self) -> None:
        """Open a connection (``_opening`` counted it) and add it to the pool; then the
        reads waiting for one try again."""
        try:
            conn = await self._connect()
        except BaseException:
            with self._lock:
                self._opening -= 1
                self._wake()
            raise
        with self._lock:
            self._opening -= 1
            self._wake()
            if not self._closed:
                self._conns.append(conn)
                return
        conn.close()

    def _wake(self) -> None:
        """Let every waiting read try again (under ``_lock``), each on its own loop."""
        turns, self._turns = self._turns, []
        for turn in turns:
            loop = turn.future.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, turn.future)

    async def _connect(self) -> _Conn:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        try:
            await conn.execute("SET extra_float_digits = 1")  # floats in JSON: shortest exact
            found = _Conn(conn)
            await found.open()
        except BaseException:
            await conn.close()
            raise
        return found

    def close(self) -> None:
        """Close every connection; reads in flight fail."""
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
            self._wake()  # they find the store closed
        for conn in conns:
            conn.close()

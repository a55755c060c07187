"""The attempt journal: each provider call is begun and ended durably, in
transactions shared by every sending lane (group commit).

A lane (a thread of a journaled channel such as ``ExternalChannel``) hands
the journal each result as soon as the provider answered (``end``: queued,
the lane goes on) and asks it to ``begin`` its next message (it waits). One
committer thread takes whatever all lanes queued since its last commit, in
order, and writes it in one transaction: the results (as ``Outbox.record``:
sent, retry, dead, fallback), then the begins (the deliveries become
``sending`` with attempts + 1, if still leased to this worker). Then it wakes
the lanes that wait. Before committing it waits (at most ``linger``, 2 ms)
until every lane still sending has asked, so one commit answers all the
lanes rather than one or two: a commit costs far more than a row in it. A
lane hands a message to the provider only once its begin is committed, and
that commit holds the lane's previous result too (or a commit before it
did), so a worker killed at any moment leaves at most one
``sending`` attempt per lane, and the throughput costs one commit per round
of lanes, not per message.

A channel that drives all its lanes from one thread (``http_loop``) uses the
batch form instead: ``end_many`` queues results, ``begin_many`` commits them
with the next begins in the caller's thread and returns at once with the
grants (no committer thread is started, no lock is handed over), ``flush``
commits what is left. The same bound holds: each lane's begin is committed
with (or after) its previous result, before its request is written.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType

from ceap.channels.base import Message, SendResult
from ceap.delivery.model import Delivery, counted
from ceap.delivery.outbox import Outbox, Retry


class _Ask:
    """What one lane asked for: begin ``start``, or record ``done``."""

    __slots__ = ("done", "error", "finished", "granted", "ready", "start")

    def __init__(self, start: Delivery | None, done: tuple[Delivery, SendResult] | None,
                 ready: threading.Lock | None = None):
        self.start, self.done = start, done
        self.granted = self.finished = False
        self.error: Exception | None = None
        #: held until the ask is committed: a lane waits on its own ask, so a commit wakes
        #: only the lanes it answered (not every waiting lane, as one shared condition would)
        self.ready = ready

    def wait(self) -> None:
        if self.ready is not None and not self.finished:
            self.ready.acquire()
            self.ready.release()


def _held() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


class AttemptJournal:
    """The ``SendJournal`` the dispatcher hands a journaled channel for one batch.

    Use it as a context manager (the committer thread runs inside; leaving it
    commits what is still queued). Afterwards, ``state(delivery)`` says what
    became of each delivery: ``recorded`` (its result is in the store),
    ``refused`` (another worker took it over: leave it alone), ``open`` (begun,
    result not recorded) or ``unstarted``; ``error`` holds the first failed
    commit, if any.
    """

    #: it has the batch form ``begin_many``/``end_many``/``flush`` (``http_loop.BatchJournal``)
    batched = True

    def __init__(self, outbox: Outbox, deliveries: Iterable[Delivery], clock: Callable[[], datetime],
                 retry: Retry, jitter: Callable[[], float], lanes: int = 1, linger: float = 0.002):
        self.outbox, self.clock, self.retry, self.jitter = outbox, clock, retry, jitter
        self._by_key = {(d.tenant_id, d.idempotency_key): d for d in deliveries}
        self._work = threading.Condition(threading.Lock())
        self._asks: list[_Ask] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        #: delivery id -> the delivery with this attempt counted (begun, granted)
        self.begun: dict[int, Delivery] = {}
        self.recorded: set[int] = set()
        self.refused: set[int] = set()
        self.counts = {"sent": 0, "retry": 0, "dead": 0, "fallback": 0}
        #: transactions committed, and the most attempts begun and not yet ended at once
        self.commits = 0
        self.peak_in_flight = 0
        self.error: Exception | None = None
        #: the channel's lanes (threads), and how long a commit may wait for their begins
        self.lanes, self.linger = lanes, linger
        self._ended = 0  # results handed in
        self._begins = 0  # begins among the queued asks
        self._open = False
        #: results ended with ``end_many``, for the next ``begin_many`` (or ``flush``)
        self._queued: list[tuple[Delivery, SendResult]] = []

    # -- the lanes' side (SendJournal) ---------------------------------------------
    def begin(self, message: Message) -> bool:
        ask = _Ask(self._delivery(message), None, ready=_held())
        self._submit(ask, wait=True)
        return ask.granted

    def begin_soon(self, message: Message) -> Callable[[], bool]:
        ask = _Ask(self._delivery(message), None, ready=_held())
        self._submit(ask, wait=False)

        def granted() -> bool:
            ask.wait()
            if ask.error is not None:
                raise ask.error
            return ask.granted

        return granted

    def end(self, message: Message, result: SendResult) -> None:
        self._submit(_Ask(None, self._attempted(message, result)), wait=False)

    # -- one sending thread's side: commits in the caller's thread, no committer --------
    def end_many(self, ended: Iterable[tuple[Message, SendResult]]) -> None:
        """Queue these results for the next ``begin_many`` (or ``flush``); returns at once."""
        if not self._open:
            raise RuntimeError("the attempt journal is not open")
        self._queued.extend(self._attempted(m, r) for m, r in ended)

    def begin_many(self, messages: Sequence[Message]) -> list[bool]:
        """Commit, in this thread and one transaction, the results queued by ``end_many``
        and the begins of ``messages``; each flag says whether its message may be sent.
        For a channel that drives all its lanes from one thread (no lock, no hand-off);
        it must not mix this with ``begin``/``end``. Raises what the commit raised (the
        queued results are then not recorded: they stay open, for crash recovery)."""
        if not self._open:
            raise RuntimeError("the attempt journal is not open")
        if self.error is not None:
            raise self.error
        done, self._queued = self._queued, []
        starts = [self._delivery(m) for m in messages]
        self._ended += len(done)
        if not (done or starts):
            return []
        try:
            granted = self._write(done, starts)
        except Exception as exc:
            self.error = exc
            raise
        return [d.id in granted for d in starts]

    def flush(self) -> None:
        """Commit the results queued by ``end_many`` (``begin_many`` with no message)."""
        if self._queued:
            self.begin_many(())

    def _delivery(self, message: Message) -> Delivery:
        try:
            return self._by_key[(message.tenant_id, message.idempotency_key)]
        except KeyError:
            raise ValueError(f"the journal has no delivery with key {message.idempotency_key!r}") from None

    def _attempted(self, message: Message, result: SendResult) -> tuple[Delivery, SendResult]:
        """The delivery with this attempt counted: begun, or tried without a begin (the call
        failed before the provider could accept the message, so it was never ``sending``)."""
        d = self._delivery(message)
        return self.begun.get(d.id) or counted(d), result

    def _submit(self, ask: _Ask, wait: bool) -> None:
        with self._work:
            if not self._open or self._closing:
                raise RuntimeError("the attempt journal is not open")
            if self._thread is None:  # started at the first ask: ``begin_many`` needs none
                self._thread = threading.Thread(target=self._loop, name="ceap-journal", daemon=True)
                self._thread.start()
            if ask.start is not None and self.error is not None:  # a result may be lost: no more
                raise self.error
            self._asks.append(ask)
            if ask.done is not None:
                self._ended += 1
            if ask.start is not None:
                self._begins += 1
            # wake the committer only when it has something to do: the first ask (it may be
            # idle), or the ask that completes a round (it may be gathering); waking it for
            # every ask cost two wake-ups a message (thread switches under one GIL)
            if len(self._asks) == 1 or self._begins >= self._working():
                self._work.notify()
        if wait:
            ask.wait()
        if ask.error is not None:
            raise ask.error

    # -- the committer ---------------------------------------------------------------
    def __enter__(self) -> AttemptJournal:
        self._open = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._work:
            self._closing = True
            self._work.notify()
        if self._thread is not None:
            self._thread.join()
        if self._queued and self.error is None:  # ended with ``end_many`` after the last begin
            with contextlib.suppress(Exception):  # ``error`` holds it; the results stay open
                self.flush()
        self._open = False

    def _loop(self) -> None:
        while True:
            with self._work:
                while not self._asks and not self._closing:
                    self._work.wait()
                if not self._asks:
                    return
                if self.lanes > 1 and self.linger > 0:
                    self._gather()
                asks, self._asks, self._begins = self._asks, [], 0
            error: Exception | None = None
            try:
                self._commit(asks)
            except Exception as exc:  # waiting lanes raise it; what was not committed stays open
                error = exc
                self.error = self.error or exc
            for ask in asks:
                ask.error, ask.finished = error, True
                if ask.ready is not None:
                    ask.ready.release()

    def _gather(self) -> None:
        """Wait (at most ``linger`` seconds) until every lane still sending has asked for its
        next begin, so that one commit answers them all: committing at the first ask takes a
        commit per one or two lanes, and a commit costs far more than a row in it. Nothing is
        sent before its begin is committed, so the crash window is the same. Called with
        ``_work`` held."""
        until = time.monotonic() + self.linger
        while not self._closing:
            if self._begins >= self._working() or (left := until - time.monotonic()) <= 0:
                return
            self._work.wait(left)

    def _working(self) -> int:
        """Lanes that still have work (each will ask for a begin or hand in a result)."""
        return min(self.lanes, len(self._by_key) - self._ended)

    def _commit(self, asks: list[_Ask]) -> None:
        granted = self._write([a.done for a in asks if a.done is not None],
                              [a.start for a in asks if a.start is not None])
        for ask in asks:
            if ask.start is not None and ask.start.id in granted:
                ask.granted = True

    def _write(self, done: list[tuple[Delivery, SendResult]], starts: list[Delivery]) -> set[int]:
        """One transaction: the results ``done``, then the begins of ``starts``; the ids granted."""
        now = self.clock()
        with self.outbox.store.tx() as tx:
            counts = (self.outbox.record_in(tx, done, now, self.retry, (self.jitter() for _ in done))
                      if done else {})
            granted = self.outbox.begin_in(tx, [d.id for d in starts], now) if starts else set()
        self.commits += 1
        for name, n in counts.items():
            self.counts[name] += n
        self.recorded.update(d.id for d, _ in done)
        for d in starts:
            if d.id in granted:
                self.begun[d.id] = counted(d)
            else:
                self.refused.add(d.id)
        self.peak_in_flight = max(self.peak_in_flight, len(self.begun) - len(self.recorded))
        return granted

    def waiting(self) -> int:
        """Asks queued for the next commit (the lanes waiting behind the current one)."""
        with self._work:
            return len(self._asks)

    # -- afterwards ------------------------------------------------------------------
    def state(self, d: Delivery) -> str:
        if d.id in self.recorded:
            return "recorded"
        if d.id in self.refused:
            return "refused"
        return "open" if d.id in self.begun else "unstarted"

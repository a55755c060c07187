"""What channels that call an outside provider share: deliver each key once,
many at a time, with secrets read from the environment. The base of the
e-mail, webhook, chat and Apprise channels.

A subclass implements ``deliver_one(message) -> SendResult``; ``send`` does
the rest: keys the provider already accepted (the ledger) or seen earlier in
the batch are ``duplicate`` without a call; a message without the address
the channel needs fails permanently; the others go out on ``concurrency``
threads, the lanes (each keeps its own connection); once the provider is
unreachable or asks to wait (``halts``), the messages not yet tried fail
retryably with that wait instead of piling up time-outs.

Given a ``journal`` (the dispatcher's; see ``ceap.channels.base.SendJournal``),
each lane begins each message with it right before ``deliver_one`` (the
message becomes ``sending`` in the outbox) and ends it with its result right
after, so a killed process leaves at most ``concurrency`` messages whose
outcome is unknown. A message the journal refuses (another worker took it
over) is not sent. A subclass may drive the lanes itself, from one thread
(``_drive``: ``HttpChannel`` does, see ``http_loop``), with the journal's
batch form. A channel whose provider accepts a message only at the
end of a conversation (SMTP: at the end of DATA) sets ``hands_over = True``
and calls ``self.hand_over()`` itself at that point of no return (having
called ``hand_over_soon()`` a little earlier, so that the commit overlaps a
round trip); a failure before it still counts as an attempt.

The ledger (``SentLedger``) holds the keys a provider accepted, per tenant.
Without ``sent_keys`` it is in memory (one instance); with a path it is a
SQLite file (``sent_keys`` table) shared by every instance and process on
the host: a key sent again, also by another process, is reported
``duplicate`` without a call. Keys are written after the provider accepted
them, in batches (one commit per ``sent_keys_commit_every`` keys, default
256, and at the end of each ``send``); with ``sent_keys_commit_every: 1``
each key is committed before its thread sends the next message. The commit
survives a killed process, not necessarily a power cut (WAL,
``synchronous=NORMAL``). The ledger never closes the window between the
provider's answer and its record, so these channels keep
``provider_dedup = False``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, SecretStr

from ceap.channels.base import Channel, ChannelConfig, Message, SendJournal, SendResult
from ceap.errors import PluginError
from ceap.plugin import PluginConfig

#: error prefix of a failure to reach the provider at all
UNREACHABLE = "unreachable:"
_SCHEMA = ("CREATE TABLE IF NOT EXISTS sent_keys (tenant_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, "
           "provider_id TEXT, sent_at REAL NOT NULL, PRIMARY KEY (tenant_id, idempotency_key))")
_FLUSH_EVERY = 256
_MEMORY_MAX = 1_000_000

Key = tuple[str, str]


class SentLedger:
    """Keys a provider accepted: ``seen_many`` before the calls, ``add`` after each."""

    def __init__(self, path: Path | None = None, keep_days: float = 30.0,
                 commit_every: int = _FLUSH_EVERY):
        self.path = path
        self.keep_days = keep_days
        self.commit_every = max(1, commit_every)
        self._lock = threading.Lock()
        self._memory: dict[Key, str | None] = {}
        self._pending: list[tuple[str, str, str | None, float]] = []
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        """The file, opened on first use (and again after ``close``)."""
        if self._db is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute("DELETE FROM sent_keys WHERE sent_at < ?", (time.time() - self.keep_days * 86400,))
            self._db = db
        return self._db

    def seen_many(self, keys: Iterable[Key]) -> set[Key]:
        wanted = set(keys)
        with self._lock:
            found = {k for k in wanted if k in self._memory}
            if self.path is None or not wanted:
                return found
            self._flush()
            db = self._open()
            by_tenant: dict[str, list[str]] = {}
            for tenant, key in wanted - found:
                by_tenant.setdefault(tenant, []).append(key)
            for tenant, names in by_tenant.items():
                for i in range(0, len(names), 500):
                    chunk = names[i:i + 500]
                    rows = db.execute(
                        "SELECT idempotency_key FROM sent_keys WHERE tenant_id = ? AND idempotency_key "
                        f"IN ({','.join('?' * len(chunk))})", [tenant, *chunk]).fetchall()
                    found.update((tenant, r[0]) for r in rows)
            return found

    def seen(self, tenant_id: str, key: str) -> bool:
        return bool(self.seen_many([(tenant_id, key)]))

    def add(self, tenant_id: str, key: str, provider_id: str | None = None) -> None:
        with self._lock:
            if self.path is None:
                if len(self._memory) >= _MEMORY_MAX:
                    self._memory.pop(next(iter(self._memory)))
                self._memory[(tenant_id, key)] = provider_id
                return
            self._pending.append((tenant_id, key, provider_id, time.time()))
            if len(self._pending) >= self.commit_every:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        db = self._open()
        db.execute("BEGIN IMMEDIATE")
        try:  # 500 rows a statement: one step each (executemany steps, and yields the GIL, per row)
            for start in range(0, len(self._pending), 500):
                chunk = self._pending[start:start + 500]
                db.execute("INSERT OR IGNORE INTO sent_keys VALUES " + ",".join(["(?,?,?,?)"] * len(chunk)),
                           [value for row in chunk for value in row])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._pending = []

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._db is not None:
                self._db.close()
                self._db = None


def halts(result: SendResult) -> bool:
    """The provider is unreachable or asked to wait: do not try the rest of the batch now."""
    return result.retryable and (result.retry_after is not None
                                 or (result.error or "").startswith(UNREACHABLE))


def env_secret(channel: Channel[Any], env: str, what: str) -> SecretStr:
    """The value of environment variable ``env`` (or the context's connection of that name),
    masked wherever it could be printed; a clear error naming the variable if unset."""
    value = os.environ.get(env) or channel.context.connections.get(env)
    if not value:
        raise PluginError(f"{channel.config.type} channel: {what} missing: set the environment "
                          f"variable {env}")
    return SecretStr(value)


class ExternalConfig(ChannelConfig):
    type: str
    sent_keys: str | None = Field(
        None, description="SQLite file of accepted keys (relative to the project): a key sent again, "
                          "also by another instance or process, is a duplicate, not a second message")
    sent_keys_commit_every: int = Field(
        _FLUSH_EVERY, ge=1, description="accepted keys per commit of the sent_keys file; 1: each key "
                                        "is committed before the next message goes out, so a killed "
                                        "process resends at most the messages in flight")
    concurrency: int = Field(8, ge=1, le=256, description="messages in flight at once (threads)")


L = TypeVar("L", bound=ExternalConfig)


class ExternalChannel(Channel[L]):
    """Subclasses implement ``deliver_one``; it may be called from several threads at once."""

    config_base: ClassVar[type[PluginConfig] | None] = ExternalConfig  # checked at registration
    journaled: ClassVar[bool] = True  # send(messages, journal=...): at most ``concurrency`` in flight
    #: ``deliver_prepared`` calls ``hand_over()`` itself, right before the point of no return
    #: (it must, before any byte that could make the provider accept the message)
    hands_over: ClassVar[bool] = False

    def __init__(self, config: L, context: Any = None):
        super().__init__(config, context)
        self._lane = threading.local()  # the message this thread is sending, for hand_over
        path = self.context.path(config.sent_keys) if config.sent_keys else None
        self._sent = SentLedger(path, commit_every=config.sent_keys_commit_every)
        self._threads: ThreadPoolExecutor | None = None

    def deliver_one(self, message: Message) -> SendResult:
        raise NotImplementedError

    def prepare(self, message: Message) -> Any:
        """Optional: the work to do before ``message`` is marked ``sending`` (composing,
        signing), so that a crash during it holds nothing. Its value goes to
        ``deliver_prepared``; a ``SendResult`` instead fails the message without a call."""
        return None

    def deliver_prepared(self, message: Message, prepared: Any) -> SendResult:
        """Hand ``message``, as ``prepare`` left it, to the provider (default: ``deliver_one``)."""
        return self.deliver_one(message)

    def hand_over(self) -> bool:
        """The point of no return of the message this thread is delivering: it is marked
        ``sending`` (durably) before this returns True; False: do not send it, another worker
        took it over. ``send`` calls it before ``deliver_prepared``, unless ``hands_over``."""
        lane = self._lane
        if getattr(lane, "journal", None) is None:  # no journal
            return True
        if lane.error is not None:
            raise lane.error
        if lane.granted is None:
            try:
                wait = lane.pending or partial(lane.journal.begin, lane.message)
                lane.granted = bool(wait())
            except Exception as exc:
                lane.error = exc
                raise
        return bool(lane.granted)

    def hand_over_soon(self) -> None:
        """Ask for the point of no return now, without waiting, so that its commit overlaps
        work the provider cannot accept the message on (an SMTP envelope); ``hand_over`` then
        waits for it. The message may then be ``sending`` a little before its point."""
        lane = self._lane
        if getattr(lane, "journal", None) is not None and lane.granted is None and lane.pending is None:
            try:
                lane.pending = lane.journal.begin_soon(lane.message)
            except Exception as exc:  # hand_over raises it
                lane.error = exc

    def halts(self, result: SendResult) -> bool:
        return halts(result)

    def settled(self, message: Message, result: SendResult) -> bool:
        """Note ``message``'s result (a key the provider accepted goes in the ledger); True
        when it halts the batch (the messages not yet tried are not tried now)."""
        if result.status in ("sent", "delivered"):
            self._sent.add(message.tenant_id, message.idempotency_key, result.provider_id)
            return False
        return self.halts(result)

    def _drive(self, messages: Sequence[Message], todo: list[int], results: list[SendResult | None],
               journal: SendJournal | None) -> bool:
        """Send ``todo`` from one thread (see ``http_loop``) and say True, or say False (the
        default) and let threaded lanes send them."""
        return False

    def send(self, messages: Sequence[Message], journal: SendJournal | None = None) -> list[SendResult]:
        """Deliver ``messages``; with a ``journal``, each lane (thread) begins each message with
        it at its point of no return (``hand_over``) and ends it with its result right after."""
        results: list[SendResult | None] = [None] * len(messages)
        known = self._sent.seen_many((m.tenant_id, m.idempotency_key) for m in messages)
        first: dict[Key, int] = {}
        todo: list[int] = []
        for i, m in enumerate(messages):
            k = (m.tenant_id, m.idempotency_key)
            if k in known:
                results[i] = SendResult(m.idempotency_key, "duplicate")
            elif k in first:
                continue  # answered below, from the first one's result
            elif self.address and not m.to:
                results[i] = SendResult(m.idempotency_key, "failed",
                                        error=f"no {self.address} for customer {m.customer_id!r}")
            else:
                first[k] = i
                todo.append(i)
        halted: list[SendResult] = []

        def failure(m: Message, exc: Exception) -> SendResult:  # one message's bug is not the batch's
            return SendResult(m.idempotency_key, "failed", error=f"{type(exc).__name__}: {exc}",
                              retryable=True)

        def ready(m: Message) -> Any:
            try:
                return self.prepare(m)
            except Exception as exc:
                return failure(m, exc)

        def one(m: Message, prepared: Any) -> SendResult:
            try:
                result = self.deliver_prepared(m, prepared)
            except Exception as exc:
                result = failure(m, exc)
            if self.settled(m, result):
                halted.append(result)
            return result

        def lane(take: Callable[[], int | None], put: Callable[[int, SendResult], None]) -> None:
            while (i := take()) is not None:
                m = messages[i]
                if halted:
                    wait = halted[0]
                    put(i, SendResult(m.idempotency_key, "failed", error=f"not attempted: {wait.error}",
                                      retry_after=wait.retry_after, retryable=True))
                    continue
                prepared = ready(m)
                if isinstance(prepared, SendResult):  # refused before any call
                    put(i, prepared)
                    continue
                if journal is None:
                    put(i, one(m, prepared))
                    continue
                state = self._lane
                state.journal, state.message = journal, m
                state.pending = state.granted = state.error = None
                result: SendResult | None = None
                try:
                    if self.hands_over or self.hand_over():
                        result = one(m, prepared)
                    if state.granted is None and state.pending is not None:  # asked, not awaited
                        self.hand_over()
                finally:
                    state.journal = state.pending = None
                if state.error is not None:  # the journal failed: send nothing more
                    raise state.error
                if state.granted is False or result is None:
                    put(i, SendResult(m.idempotency_key, "failed", retryable=True,
                                      error="not attempted: another worker took it over"))
                    continue
                put(i, result)
                journal.end(m, result)  # begun, or tried and failed before its point of no return

        try:
            if not self._drive(messages, todo, results, journal):
                self._lanes(lane, todo, results)
        finally:
            self._sent.flush()
        out: list[SendResult] = []
        for m, result in zip(messages, results, strict=True):
            if result is None:  # a key repeated within the batch
                head = results[first[(m.tenant_id, m.idempotency_key)]]
                assert head is not None
                result = (SendResult(m.idempotency_key, "duplicate")
                          if head.status in ("sent", "delivered")
                          else SendResult(m.idempotency_key, "failed", error=head.error,
                                          retry_after=head.retry_after, retryable=head.retryable))
            out.append(result)
        return out

    def _lanes(self, lane: Callable[[Callable[[], int | None], Callable[[int, SendResult], None]], None],
               items: list[int], results: list[SendResult | None]) -> None:
        """Run ``lane`` on up to ``concurrency`` threads; each takes the next of ``items`` until
        none is left and puts each one's result in ``results``."""
        queue = iter(items)
        lock = threading.Lock()

        def take() -> int | None:
            with lock:
                return next(queue, None)

        def put(i: int, result: SendResult) -> None:
            results[i] = result

        workers = min(self.config.concurrency, len(items))
        if workers <= 1:
            lane(take, put)
            return
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.config.concurrency,
                                               thread_name_prefix=f"ceap-{self.config.type}")
        futures = [self._threads.submit(lane, take, put) for _ in range(workers)]
        for future in futures:
            future.result()

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        self._sent.close()

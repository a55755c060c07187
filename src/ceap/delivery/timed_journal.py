"""Provider call latency of a journaled channel: each message's call runs from its
``begin`` (granted) to its ``end``, timed here without changing the journal."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ceap.channels.base import Message, SendResult
from ceap.observability.metrics import PROVIDER_DURATION


class TimedJournal:
    """Wraps a ``SendJournal`` (and its batch form, ``BatchJournal``): observes
    ``ceap_provider_call_duration_seconds`` per message. The batch form times a call from
    its begin's commit to the ``end_many`` that follows its answer."""

    def __init__(self, journal: Any, channel: str):
        self.journal = journal
        self.histogram = PROVIDER_DURATION.labels(channel)
        self._started: dict[tuple[str, str], float] = {}
        #: the wrapped journal has the batch form (``begin_many``, ``end_many``, ``flush``)
        self.batched = bool(getattr(journal, "batched", False))

    def begin(self, message: Message) -> bool:
        granted = bool(self.journal.begin(message))
        if granted:
            self._started[(message.tenant_id, message.idempotency_key)] = time.perf_counter()
        return granted

    def begin_soon(self, message: Message) -> Callable[[], bool]:
        wait = self.journal.begin_soon(message)
        key = (message.tenant_id, message.idempotency_key)

        def granted() -> bool:
            ok = bool(wait())
            if ok and key not in self._started:
                self._started[key] = time.perf_counter()
            return ok

        return granted

    def begin_many(self, messages: Sequence[Message]) -> list[bool]:
        granted = self.journal.begin_many(messages)
        now = time.perf_counter()
        started = self._started
        for m, ok in zip(messages, granted, strict=True):
            if ok:
                started[(m.tenant_id, m.idempotency_key)] = now
        return [bool(ok) for ok in granted]

    def end_many(self, ended: Sequence[tuple[Message, SendResult]]) -> None:
        now, started, observe = time.perf_counter(), self._started, self.histogram.observe
        for m, _ in ended:
            at = started.pop((m.tenant_id, m.idempotency_key), None)
            if at is not None:
                observe(now - at)
        self.journal.end_many(ended)

    def flush(self) -> None:
        self.journal.flush()

    def end(self, message: Message, result: SendResult) -> None:
        started = self._started.pop((message.tenant_id, message.idempotency_key), None)
        if started is not None:
            self.histogram.observe(time.perf_counter() - started)
        self.journal.end(message, result)

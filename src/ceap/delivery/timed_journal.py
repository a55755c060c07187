"""Provider call latency of a journaled channel: each message's call runs from its
``begin`` (granted) to its ``end``, timed here without changing the journal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ceap.channels.base import Message, SendResult
from ceap.observability.metrics import PROVIDER_DURATION


class TimedJournal:
    """Wraps a ``SendJournal``: observes ``ceap_provider_call_duration_seconds`` per message."""

    def __init__(self, journal: Any, channel: str):
        self.journal = journal
        self.histogram = PROVIDER_DURATION.labels(channel)
        self._started: dict[tuple[str, str], float] = {}

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

    def end(self, message: Message, result: SendResult) -> None:
        started = self._started.pop((message.tenant_id, message.idempotency_key), None)
        if started is not None:
            self.histogram.observe(time.perf_counter() - started)
        self.journal.end(message, result)

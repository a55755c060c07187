"""Recording what became of attempts: each channel's own retry policy, counted into
the pass's stats and the delivery metrics."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from ceap.channels.base import SendResult
from ceap.delivery.dispatch_state import DispatcherState, DispatchStats
from ceap.delivery.model import Delivery
from ceap.delivery.outbox import Retry
from ceap.observability import metrics


class OutcomeRecorder(DispatcherState):
    """Writes outcomes to the outbox in one statement set per channel."""

    def _record(self, outcomes: list[tuple[Delivery, SendResult]], stats: DispatchStats) -> None:
        """Record outcomes (each channel's own retry policy), adding the counts to ``stats``."""
        by_channel: dict[str, list[tuple[Delivery, SendResult]]] = defaultdict(list)
        for d, result in outcomes:
            by_channel[d.channel].append((d, result))
        for channel, recorded in by_channel.items():
            counts = self.outbox.record(recorded, self.clock(), self._retry_of(channel),
                                        (self.rng.random() for _ in recorded))
            metrics.record_deliveries(channel, counts)
            stats.sent += counts["sent"]
            stats.retry += counts["retry"]
            stats.dead += counts["dead"]
            stats.fallback += counts["fallback"]

    def _retry_of(self, channel: str) -> Retry:
        """The dispatcher's retry policy, with the channel's own ``max_attempts`` if it sets one."""
        attempts = self.channels[channel].config.max_attempts if channel in self.channels else None
        if attempts is None or attempts == self.retry.max_attempts:
            return self.retry
        return replace(self.retry, max_attempts=attempts)

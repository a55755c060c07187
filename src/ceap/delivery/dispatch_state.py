"""What every part of the dispatcher shares: its counters, a prepared batch, and
the attributes the ``Dispatcher`` sets up (declared here for the mixins that use them)."""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from ceap.channels.base import Channel, Message
from ceap.delivery.model import Delivery, Profile
from ceap.delivery.outbox import Outbox, Retry
from ceap.delivery.policy import Policy
from ceap.delivery.render import Renderer
from ceap.delivery.resilience import Bucket, CircuitBreaker
from ceap.model import Candidate
from ceap.store.base import Store


@dataclass
class DispatchStats:
    expired: int = 0
    claimed: int = 0
    planned: int = 0
    suppressed: int = 0
    deferred: int = 0
    leased: int = 0      # due deliveries claimed for sending
    attempted: int = 0   # of those, handed to a provider (marked sending, an attempt counted)
    sent: int = 0
    retry: int = 0
    dead: int = 0
    fallback: int = 0
    shadow: int = 0
    requeued: int = 0
    ambiguous: int = 0
    #: due deliveries a one-shot run left queued: a rate limit (the run was stopped while
    #: waiting for it) or an open circuit breaker held them back (see ``Dispatcher.held``)
    held_rate_limit: int = 0
    held_circuit_open: int = 0

    def add(self, other: DispatchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def busy(self) -> bool:
        return bool(self.claimed or self.leased)


@dataclass
class Batch:
    """One pass's claimed and rendered attempts, per channel, waiting for their providers."""

    stats: DispatchStats
    work: dict[str, list[tuple[Delivery, Message]]]

    def ids(self) -> list[int]:
        return [d.id for messages in self.work.values() for d, _ in messages]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class DispatcherState:
    """The attributes ``Dispatcher.__init__`` sets, typed for the mixins that read them."""

    store: Store
    channels: dict[str, Channel[Any]]
    programs: dict[str, Any] | None
    policies: list[Policy]
    renderer: Renderer
    outbox: Outbox
    batch_size: int
    retry: Retry
    clock: Callable[[], datetime]
    rng: random.Random
    breakers: dict[str, CircuitBreaker]
    buckets: dict[str, Bucket]
    #: candidates this dispatcher just planned, so sending them needs no second read
    _planned: dict[int, tuple[Candidate, Profile | None]]
    #: ids of claimed attempts in prepared batches not sent yet (a claim skips them: they
    #: are leased to this worker and still ``queued``), guarded by ``_in_hand_lock``
    _in_hand: set[int]
    _in_hand_lock: threading.Lock
    _store_dialect: str | None
    #: channel names candidates asked for that no configured channel has (they were
    #: suppressed as ``no_channel``), so the CLI can say what to add to ``ceap.yaml``
    unconfigured: set[str]

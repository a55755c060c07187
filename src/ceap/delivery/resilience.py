"""Per-provider rate limits (token buckets: in the process, or shared by every
dispatcher through the store) and circuit breakers (in the process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Bucket(Protocol):
    rate: float

    def wait(self, n: int = 1) -> float: ...

    def acquire(self, n: int) -> int: ...

    def refund(self, n: int) -> None: ...


@dataclass
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.stamp = self.burst, self.clock()

    def available(self) -> int:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return int(self.tokens)

    def wait(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are available (0: now)."""
        self.available()
        return max(0.0, (min(n, self.burst) - self.tokens) / self.rate)

    def take(self, n: int) -> None:
        self.available()
        self.tokens -= n

    def acquire(self, n: int) -> int:
        """Take up to ``n`` whole tokens now; returns how many were taken."""
        granted = max(0, min(n, self.available()))
        self.tokens -= granted
        return granted

    def refund(self, n: int) -> None:
        """Give back tokens acquired and not used."""
        if n > 0:
            self.tokens = min(self.burst, self.tokens + n)


class SharedTokenBucket:
    """A token bucket kept in the store's ``rate_limits`` table (row ``name``), so that
    every dispatcher on the store draws from the same ``rate``: each ``acquire`` and
    ``refund`` is one short transaction that locks the row (PostgreSQL) or the database
    (SQLite). ``clock`` gives seconds since the epoch, the same in every process."""

    def __init__(self, store: Any, name: str, rate: float, burst: float,
                 clock: Callable[[], float] = time.time):
        self.store, self.name, self.rate, self.burst, self.clock = store, name, rate, burst, clock

    def _refill(self, tx: Any) -> float:
        now = self.clock()
        tx.execute("INSERT INTO rate_limits (name, tokens, stamp) VALUES (?, ?, ?) "
                   "ON CONFLICT (name) DO NOTHING", (self.name, self.burst, now))
        tokens, stamp = tx.execute("SELECT tokens, stamp FROM rate_limits WHERE name = ?"
                                   + (" FOR UPDATE" if tx.dialect == "postgres" else ""),
                                   (self.name,)).fetchone()
        return min(self.burst, float(tokens) + max(0.0, now - float(stamp)) * self.rate)

    def _store(self, tx: Any, tokens: float) -> None:
        tx.execute("UPDATE rate_limits SET tokens = ?, stamp = ? WHERE name = ?",
                   (tokens, self.clock(), self.name))

    def available(self) -> int:
        with self.store.tx() as tx:
            return int(self._refill(tx))

    def wait(self, n: int = 1) -> float:
        with self.store.tx() as tx:
            tokens = self._refill(tx)
        return max(0.0, (min(n, self.burst) - tokens) / self.rate)

    def acquire(self, n: int) -> int:
        if n <= 0:
            return 0
        with self.store.tx() as tx:
            tokens = self._refill(tx)
            granted = max(0, min(n, int(tokens)))
            self._store(tx, tokens - granted)
        return granted

    def refund(self, n: int) -> None:
        if n <= 0:
            return
        with self.store.tx() as tx:
            self._store(tx, min(self.burst, self._refill(tx) + n))


@dataclass
class CircuitBreaker:
    """Opens after ``failures`` consecutive failures; after ``cooldown`` seconds it
    lets one probe through (half-open); a success closes it, a failure reopens it."""

    failures: int = 5
    cooldown: float = 30.0
    clock: Callable[[], float] = time.monotonic
    consecutive: int = 0
    opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allowance(self, wanted: int) -> int:
        """How many sends may go now: all when closed, one probe when half-open."""
        state = self.state
        return wanted if state == "closed" else (min(1, wanted) if state == "half-open" else 0)

    def record(self, ok: bool) -> None:
        if ok:
            self.consecutive, self.opened_at = 0, None
            return
        self.consecutive += 1
        if self.state == "half-open" or self.consecutive >= self.failures:
            self.opened_at = self.clock()

"""Per-provider rate limits and circuit breakers (in-process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


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

    def take(self, n: int) -> None:
        self.available()
        self.tokens -= n


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

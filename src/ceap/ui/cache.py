"""Reports the dashboard keeps until their inputs change.

An uplift report reads every candidate of a program and computes an interval per
group: hundreds of milliseconds on the demo's data. The page keeps the last reports,
each under a fingerprint of what it was computed from (the program's candidates,
conversions and engagements: counts and newest ids or times, a few indexed
aggregates); a request whose fingerprint is unchanged gets the kept report.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from ceap.store.base import Store

T = TypeVar("T")


def outcome_fingerprint(store: Store, tenant: str, program: str) -> tuple[Any, ...]:
    """What an uplift report of ``program`` depends on, in a few cheap aggregates."""
    with store.tx() as tx:
        cands = tx.execute("SELECT count(*), max(id) FROM candidates WHERE tenant_id = ? AND "
                           "program = ?", (tenant, program)).fetchone()
        convs = tx.execute("SELECT count(*), max(attributed_at) FROM conversions WHERE tenant_id = ? "
                           "AND program = ?", (tenant, program)).fetchone()
        engs = tx.execute("SELECT count(*), max(id) FROM engagements WHERE tenant_id = ?",
                          (tenant,)).fetchone()
    return (*cands, *(str(v) for v in convs), *engs)


class Kept:
    """At most ``size`` values, the least recently used dropped first; thread-safe."""

    def __init__(self, size: int = 64):
        self.size = size
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                value: T = self._values[key]
                return value
        made = make()
        with self._lock:
            self._values[key] = made
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return made

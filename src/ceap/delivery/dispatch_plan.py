"""Planning: claim due candidates (leases), run the policies over them, and write
their deliveries to the outbox (under per-customer advisory locks when frequency
caps must hold across dispatchers on PostgreSQL)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ceap.delivery.digest import flush_digests
from ceap.delivery.dispatch_state import DispatcherState, DispatchStats
from ceap.delivery.model import Decision
from ceap.delivery.policies.caps import FrequencyCaps
from ceap.delivery.policy import PolicyContext
from ceap.delivery.profiles import load_profiles
from ceap.model import Candidate
from ceap.observability import metrics
from ceap.observability.tracing import span


class CandidatePlanner(DispatcherState):
    """The first half of a pass: candidates in, planned deliveries out."""

    def plan(self) -> DispatchStats:
        with span("ceap.dispatch.plan") as current:
            stats = self._plan()
            metrics.record_dispatch_plan(stats.__dict__)
            if current is not None:
                current.set_attribute("ceap.claimed", stats.claimed)
            return stats

    def _plan(self) -> DispatchStats:
        stats = DispatchStats()
        now = self.clock()
        flush_digests(self, now)  # due digests become candidates (ceap.delivery.digest)
        stats.expired = self.outbox.expire(now)
        active = None
        if self.programs is not None:
            active = [n for n, p in self.programs.items() if getattr(p, "mode", "live") != "paused"]
        claimed = self.outbox.claim_candidates(now, self.batch_size, active)
        stats.claimed = len(claimed)
        if not claimed:
            return stats
        initial: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], bool]] = {}
        decisions = [self._initial(c, initial) for c in claimed]
        profiles = load_profiles(self.store, {(c.tenant_id, c.customer_id) for c in claimed})
        ctx = PolicyContext(now, self.store, profiles,
                            {n: ch.address for n, ch in self.channels.items()},
                            self.programs or {})
        with self._customers_locked(claimed):
            for policy in self.policies:
                live = [(c, d) for c, d in zip(claimed, decisions, strict=True)
                        if d.suppress is None and d.defer_until is None]
                if not live:
                    break
                changed = policy.apply([c for c, _ in live], [d for _, d in live], ctx)
                by_id = {d.candidate_id: d for d in changed}
                decisions = [by_id.get(d.candidate_id, d) for d in decisions]
            # born leased to this dispatcher, which sends them next: no second write to claim them
            counts = self.outbox.plan({c.id: c for c in claimed}, decisions, now, lease=True)
        if len(self._planned) > 8 * self.batch_size:  # attempts planned long ago: re-read them
            self._planned.clear()
        self._planned.update((c.id, (c, profiles.get((c.tenant_id, c.customer_id))))
                             for c, d in zip(claimed, decisions, strict=True) if d.send)
        stats.planned, stats.suppressed, stats.deferred = (
            counts["planned"], counts["suppressed"], counts["deferred"])
        return stats

    @contextmanager
    def _customers_locked(self, claimed: Sequence[Candidate]) -> Iterator[None]:
        """With frequency caps on PostgreSQL: run the policies and write the plan in one
        transaction that holds an advisory lock per claimed customer (taken in key order,
        so two dispatchers never wait on each other in a circle). A dispatcher that claimed
        another candidate of the same customer waits until this plan is committed, then
        counts its deliveries: a cap holds across dispatchers. Elsewhere: nothing."""
        capped = any(isinstance(p, FrequencyCaps) and not p.config.caps.empty for p in self.policies)
        if not capped or self._dialect() != "postgres":
            yield
            return
        keys = sorted({zlib.crc32(f"{c.tenant_id}\x00{c.customer_id}".encode()) - 2**31
                       for c in claimed})
        with self.store.tx() as tx:
            tx.execute("SELECT count(pg_advisory_xact_lock(4243, k)) FROM "
                       "(SELECT unnest(?::int[]) AS k ORDER BY k) AS keys", (keys,))
            yield

    def _dialect(self) -> str:
        if self._store_dialect is None:
            with self.store.tx() as tx:
                self._store_dialect = tx.dialect
        return self._store_dialect

    def _initial(self, c: Candidate,
                 seen: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], bool]]) -> Decision:
        """Every configured channel of ``c``, in order (``seen``: per program and channels,
        worked out once a pass: a batch's candidates mostly share both)."""
        key = (c.program, tuple(c.channels))
        if (found := seen.get(key)) is None:
            spec = (self.programs or {}).get(c.program)
            fallback = getattr(getattr(spec, "action", None), "deliver", "fallback") != "all"
            found = seen[key] = (tuple(ch for ch in c.channels if ch in self.channels), fallback)
        known, fallback = found
        if not known:
            self.unconfigured.update(c.channels)
            return Decision(c.id, suppress="no_channel",
                            note=f"no configured channel among {', '.join(c.channels)}")
        # fields set directly, as ``Decision(...)`` would (a frozen dataclass's ``__init__``
        # costs a few microseconds, and a pass decides thousands)
        d = object.__new__(Decision)
        d.__dict__.update(candidate_id=c.id, send=known, fallback=fallback, suppress=None,
                          defer_until=None, note=None)
        return d

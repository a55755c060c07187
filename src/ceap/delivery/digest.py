"""Digests (docs/digests.md): a program with ``action.digest`` has its candidates held
(status ``digest``, then ``in_digest``) and sends each customer one message per digest
key and window, listing them.

The dispatcher calls :func:`flush_digests` at the start of each planning pass. It

1. **collects**: each candidate a run wrote for a digest joins the customer's open
   digest of its key, or opens one (its window starts at the candidate's time and is
   due ``window`` later, or at the schedule's next fire time in the customer's time
   zone). A candidate whose category is transactional or security, or whose program
   no longer has a digest, is not held: it becomes ``pending`` and goes at once;
2. **flushes** each due digest: in one transaction, its message (a candidate of the
   first item's program, with ``payload.digest``: count, items, more) is written with
   a dedup key derived from (tenant, customer, key, window start), and its items
   become ``digested``. A crash before the commit leaves nothing; the rerun writes
   the same message. The message then goes through the policies and the outbox like
   any candidate (consent, quiet hours, caps, arbitration, retries).
"""

from __future__ import annotations

import logging
import weakref
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.digest_store import DigestStore, Waiting, Window
from ceap.delivery.policies.common import Zones
from ceap.model import Candidate
from ceap.spec.digest import NEVER_HELD, Digest

log = logging.getLogger(__name__)
#: candidates collected, and digests flushed, per transaction
CHUNK = 1000
#: items listed by a digest whose program has no digest any more
DEFAULT_ITEMS = 10


@dataclass
class DigestStats:
    held: int = 0        # candidates put in a digest
    released: int = 0    # candidates sent on their own instead (transactional, no digest now)
    flushed: int = 0     # digest messages written
    items: int = 0       # candidates those messages hold


def digest_of(spec: Any) -> Digest | None:
    return getattr(getattr(spec, "action", None), "digest", None)


class Digests:
    """Collects and flushes the digests of ``programs`` (name -> ProgramSpec)."""

    def __init__(self, store: Any, programs: dict[str, Any], default_timezone: str = "UTC"):
        self.db = DigestStore(store)
        self.programs = programs
        self.zones = Zones(default_timezone)
        #: some program reads its schedule in the customer's time zone: profiles are read
        self._by_customer_zone = any(
            d is not None and d.schedule is not None and d.timezone == "customer"
            for d in map(digest_of, programs.values()))

    def step(self, now: datetime) -> DigestStats:
        stats = DigestStats()
        while self._collect(now, stats) == CHUNK:
            pass
        due = self.db.due(now)
        for start in range(0, len(due), CHUNK):
            if not self._flush(due[start:start + CHUNK], now, stats):
                break
        if stats.held or stats.released or stats.flushed:
            log.info("digests: %d candidate(s) held, %d sent on their own, %d digest message(s) "
                     "written holding %d", stats.held, stats.released, stats.flushed, stats.items)
        return stats

    # -- collecting ----------------------------------------------------------
    def _collect(self, now: datetime, stats: DigestStats) -> int:
        with self.db.locked() as tx:
            if tx is None:  # another dispatcher is at it
                return 0
            waiting = self.db.waiting(tx, sorted(self.programs), CHUNK)
            if not waiting:
                return 0
            keys = {(w.tenant_id, w.customer_id) for w in waiting}
            open_ = self.db.open_windows(tx, keys)
            zones = self.db.timezones(tx, keys) if self._by_customer_zone else {}
            held: list[tuple[Waiting, Window]] = []
            released: list[tuple[int, str]] = []
            for w in waiting:
                digest = digest_of(self.programs[w.program])
                if w.category in NEVER_HELD:
                    released.append((w.id, f"digest: a {w.category} message is never held"))
                    continue
                if digest is None:
                    released.append((w.id, "digest: the program has no digest any more"))
                    continue
                key = digest.key_for(w.program)
                windows = open_[(w.tenant_id, w.customer_id, key)]
                window = next((x for x in reversed(windows) if w.at < x.due), None)
                if window is None:  # the first of a new window
                    window = Window(w.tenant_id, w.customer_id, key, w.at,
                                    self.due_at(digest, w.at, zones.get((w.tenant_id, w.customer_id))))
                    windows.append(window)
                held.append((w, window))
            self.db.hold(tx, held, now)
            self.db.release(tx, released, now)
        stats.held += len(held)
        stats.released += len(released)
        return len(waiting)

    def due_at(self, digest: Digest, start: datetime, customer_zone: str | None) -> datetime:
        """When a window that starts at ``start`` is due."""
        if digest.window is not None:
            return start + digest.window
        from ceap.runtime.cron import Cron

        assert digest.schedule is not None
        zone = self.zones.get(customer_zone) if digest.timezone == "customer" else None
        name = zone.key if zone is not None else digest.timezone
        return Cron(digest.schedule, name).next(start)[0]

    # -- flushing ------------------------------------------------------------
    def _flush(self, windows: list[Window], now: datetime, stats: DigestStats) -> bool:
        with self.db.locked() as tx:
            if tx is None:
                return False
            messages = []
            for window, items in self.db.held(tx, windows).items():
                spec = self.programs.get(items[0].program)
                if spec is None:  # not in the programs folder now: kept until it is back
                    continue
                # a program whose digest was removed since: what it held still goes, listed
                digest = digest_of(spec)
                shown = digest.max_items if digest is not None else DEFAULT_ITEMS
                messages.append((self.message(window, items, spec, shown, now), [c.id for c in items]))
                stats.items += len(items)
            self.db.send(tx, messages, now)
            stats.flushed += len(messages)
        return True

    @staticmethod
    def message(window: Window, items: list[Candidate], spec: Any, max_items: int,
                now: datetime) -> dict[str, Any]:
        """The digest message's candidate row (``CANDIDATE_COLUMNS``) for ``items``."""
        first = items[0]
        shown = items[:max_items]
        listed = [{"candidate_id": c.id, "program": c.program, "subject_id": c.subject_id,
                   "created_at": c.created_at.isoformat(), "score": c.score,
                   "payload": c.payload, "context": c.context} for c in shown]
        payload = {**spec.action.payload,
                   "digest": {"key": window.key, "count": len(items), "items": listed,
                              "more": len(items) - len(shown),
                              "window_start": window.start.isoformat(),
                              "window_end": window.due.isoformat()}}
        not_before = window.due
        return {
            "tenant_id": window.tenant_id, "program": first.program, "run_id": "digest",
            "customer_id": window.customer_id, "subject_id": None, "context": {},
            "action_type": first.action_type, "channels": first.channels,
            "template": first.template, "category": first.category,
            "score": max(c.score for c in items), "model": first.model, "reasons": None,
            "payload": payload, "status": "shadow" if spec.mode == "shadow" else "pending",
            "priority": first.priority, "created_at": now, "not_before": not_before,
            "expires_at": max(not_before, now) + spec.action.expiry,
            "dedup_key": f"digest:{window.key}:{window.customer_id}:{window.start:%Y%m%dT%H%M%S%fZ}",
            "holdout": False, "version": 1, "arm": "treatment", "variant": first.variant,
            "features": None,
        }


_runners: weakref.WeakKeyDictionary[Any, Digests] = weakref.WeakKeyDictionary()


def flush_digests(dispatcher: Any, now: datetime) -> DigestStats:
    """The dispatcher's hook: collect and flush its programs' digests at ``now``."""
    programs = dispatcher.programs
    if not programs:
        return DigestStats()
    runner = _runners.get(dispatcher)
    if runner is None or runner.programs is not programs:
        runner = Digests(dispatcher.store, programs, _default_timezone(dispatcher))
        _runners[dispatcher] = runner
    return runner.step(now)


def _default_timezone(dispatcher: Any) -> str:
    """``delivery.default_timezone`` of ``ceap.yaml``, as the dispatcher's policies hold it."""
    for policy in getattr(dispatcher, "policies", ()):
        config = getattr(policy, "config", None)
        if isinstance(config, DeliveryConfig):
            return config.default_timezone
    return "UTC"


def counts(store: Any) -> dict[str, int]:
    """Held candidates by status, for reports."""
    out: dict[str, int] = defaultdict(int)
    with store.tx() as tx:
        for status, n in tx.execute("SELECT status, count(*) FROM candidates WHERE status IN "
                                    "('digest', 'in_digest', 'digested') GROUP BY status"):
            out[status] = int(n)
    return dict(out)


__all__ = ["CHUNK", "DigestStats", "Digests", "counts", "digest_of", "flush_digests"]

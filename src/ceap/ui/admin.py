"""The dashboard's admin actions, all through this one function, so every change a
person makes in the dashboard passes one place.

The actions are the resolutions of held and dead deliveries (``ceap.delivery.held``):
resend, mark-sent and drop, each with a reason, each one transaction, which also
records each resolved delivery in the audit log (``ceap.audit``): the actor is the
signed-in key (``apikey:<id>``), the source the client's address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ceap.delivery.held import ACTIONS, Action, ResolveError, resolve
from ceap.delivery.model import Delivery
from ceap.store.base import Store

#: what the page says once an action is done
DONE = {"resend": "requeued for sending", "mark-sent": "recorded as sent", "drop": "dropped (cancelled)"}


@dataclass(frozen=True)
class AdminResult:
    action: str
    deliveries: list[Delivery]

    @property
    def message(self) -> str:
        ids = ", ".join(str(d.id) for d in self.deliveries)
        return f"{len(self.deliveries)} delivery(ies) {DONE[self.action]}: {ids}"


def admin_action(store: Store, tenant: str, actor: str, action: str, ids: Sequence[int],
                 reason: str, now: datetime, source: str | None = None) -> AdminResult:
    """Resolve held or dead deliveries ``ids`` of ``tenant`` (``ResolveError`` when one is
    neither, not the tenant's, a dead one cannot be resent, or the reason is empty: nothing
    changed). ``actor`` is who did it (``apikey:<id>``), ``source`` from where (the client's
    address); both go to the audit log with the reason."""
    if action not in ACTIONS:
        raise ResolveError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    if not ids:
        raise ResolveError("no delivery chosen")
    chosen: Action = action  # type: ignore[assignment]
    done = resolve(store, tenant, chosen, reason, now, ids=ids, actor=actor, source=source)
    return AdminResult(action, done)

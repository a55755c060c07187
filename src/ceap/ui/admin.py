"""The dashboard's admin actions, all through this one function, so every change a
person makes in the dashboard passes one place (where it is recorded for audit).

Today the actions are the resolutions of held deliveries (``ceap.delivery.held``):
resend, mark-sent and drop, each with a reason, each one transaction. Each resolved
delivery is also recorded in the audit log, ``ceap.audit.record``, where that module
is installed (``source="ui"``, the actor being the signed-in key's name).
"""

from __future__ import annotations

import importlib
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
        return f"{len(self.deliveries)} held delivery(ies) {DONE[self.action]}: {ids}"


def admin_action(store: Store, tenant: str, actor: str, action: str, ids: Sequence[int],
                 reason: str, now: datetime) -> AdminResult:
    """Resolve held deliveries ``ids`` of ``tenant`` (``ResolveError`` when one is not held,
    not the tenant's, or the reason is empty: nothing changed). ``actor`` is who did it
    (the name of the API key that signed in), kept for the audit log."""
    if action not in ACTIONS:
        raise ResolveError(f"unknown action {action!r}: expected one of {', '.join(ACTIONS)}")
    if not ids:
        raise ResolveError("no delivery chosen")
    chosen: Action = action  # type: ignore[assignment]
    done = resolve(store, tenant, chosen, reason, now, ids=ids)
    _audit(store, actor, action, done, reason.strip())
    return AdminResult(action, done)


def _audit(store: Store, actor: str, action: str, done: Sequence[Delivery], reason: str) -> None:
    try:
        audit = importlib.import_module("ceap.audit")
    except ImportError:  # the audit log is not part of this installation
        return
    for d in done:
        audit.record(store, actor=actor, action=f"deliveries.{action}", target=f"delivery:{d.id}",
                     detail=reason, source="ui")

"""A store with something on every dashboard page, for two tenants: a program run by the
real batch pipeline and dispatched by the real dispatcher; then held and dead deliveries
(as crash recovery and retries leave them), conversions, engagements, consent, bandit
updates, events, a stream backlog and dead letters written as their writers write them."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ceap.api.auth import create_key
from ceap.delivery.consent_store import revoke_consent
from ceap.delivery.dispatcher import Dispatcher
from ceap.plugin import PluginContext
from ceap.runtime.batch import run_program
from ceap.spec import load_program
from ceap.store.base import Store
from ceap.testing.doubles import CaptureConfig, CapturingChannel
from tests.experiment_helpers import add_conversions, add_engagements, candidate_ids
from tests.helpers import write_csv, write_program

PROGRAM = "win_back"
TENANTS = ("acme", "globex")


def program_spec(name: str = PROGRAM) -> dict[str, Any]:
    return {
        "name": name,
        "description": "win back customers who left over price",
        "schedule": {"cron": "0 6 * * *", "timezone": "Europe/Paris"},
        "source": {"type": "csv", "path": "customers.csv", "columns": {"ltv": "float"},
                   "max_bad_share": 0.5},
        "filters": [{"id": "valuable", "expr": "ltv >= 20"}],
        "scorer": {"type": "expression", "weights": {"ltv": 0.01}, "bias": -0.5},
        "selection": {"threshold": 0.0},
        "action": {"type": "offer", "channels": ["email"], "payload": {"discount_pct": 20}},
        "experiment": {"holdout": 0.25, "variants": [{"name": "short"}, {"name": "long"}]},
    }


@dataclass
class Scene:
    """What ``populate`` made: programs folder, API keys per tenant, ids to act on."""

    programs: Path
    keys: dict[str, str]
    held: dict[str, list[int]]
    dead: dict[str, list[int]]
    customer: str


def populate(store: Store, folder: Path, now: datetime, customers: int = 120) -> Scene:
    programs = folder / "programs"
    programs.mkdir(parents=True, exist_ok=True)
    write_program(programs / f"{PROGRAM}.yaml", program_spec())
    rows = [f"u{i:04d},{(i * 37) % 150}" if i % 17 else f"u{i:04d},notanumber" for i in range(customers)]
    write_csv(folder / "customers.csv", "customer_id,ltv", rows)
    spec = load_program(programs / f"{PROGRAM}.yaml")
    keys, held, dead, chosen = {}, {}, {}, {}
    for n, tenant in enumerate(TENANTS):
        context = PluginContext(base_dir=folder, tenant=tenant)
        run_program(spec, store, context, now=now - timedelta(days=2))
        Dispatcher(store, {"email": CapturingChannel(CaptureConfig(outbox=uuid.uuid4().hex))},
                   clock=lambda: now - timedelta(days=2) + timedelta(minutes=5)).run()
        held[tenant], dead[tenant] = _crash_marks(store, tenant, now, 3 + n, 2)
        chosen[tenant] = _outcomes(store, tenant, now)
        revoke_consent(store, tenant, chosen[tenant], "email", source="unsubscribe link")
        keys[tenant] = create_key(store, tenant, f"{tenant}-ops")
        _bandit(store, tenant, now)
        _events(store, tenant, now)
    _stream(store, now)
    return Scene(programs, keys, held, dead, chosen[TENANTS[0]])


def _crash_marks(store: Store, tenant: str, now: datetime, n_held: int,
                 n_dead: int) -> tuple[list[int], list[int]]:
    """Mark sent deliveries as crash recovery leaves them (held) and as retries do (dead)."""
    with store.tx() as tx:
        ids = [int(r[0]) for r in tx.execute(
            "SELECT id FROM deliveries WHERE tenant_id = ? AND status = 'sent' ORDER BY id",
            (tenant,)).fetchall()]
        held, dead = ids[:n_held], ids[n_held:n_held + n_dead]
        for i in held:
            tx.execute("UPDATE deliveries SET status = 'ambiguous', ambiguous_at = ?, ambiguity = 'held', "
                       "sent_at = NULL WHERE id = ?", (tx.ts(now - timedelta(hours=1)), i))
        for i in dead:
            tx.execute("UPDATE deliveries SET status = 'dead', sent_at = NULL, attempts = 5, "
                       "last_error = 'smtp 550: mailbox unavailable' WHERE id = ?", (i,))
        tx.execute("UPDATE candidates SET status = 'dispatched' WHERE id IN "
                   f"(SELECT candidate_id FROM deliveries WHERE id IN ({tx.placeholders(len(held))}))",
                   held)
    return held, dead


def _outcomes(store: Store, tenant: str, now: datetime) -> str:
    """Conversions, opens and one unsubscribe; returns the customer who unsubscribed (a
    treated one, sent a message, who opened it and converted)."""
    found = candidate_ids(store, PROGRAM, tenant)
    cands = sorted(found.values(), key=lambda c: c.customer_id)
    converted = [c for i, c in enumerate(cands) if (c.arm == "treatment" and i % 3 == 0)
                 or (c.arm != "treatment" and i % 5 == 0)]
    add_conversions(store, [(tenant, PROGRAM, c.id, c.customer_id, 25.0 + i)
                            for i, c in enumerate(converted)], now - timedelta(days=1))
    opened = [c for c in cands if c.arm == "treatment"][:10]
    add_engagements(store, [(tenant, c.id, PROGRAM, c.customer_id, "open") for c in opened],
                    now - timedelta(days=1, hours=12))
    with store.tx() as tx:
        sent = {r[0] for r in tx.execute("SELECT customer_id FROM deliveries WHERE tenant_id = ? AND "
                                         "status = 'sent'", (tenant,)).fetchall()}
    converted_ids = {c.customer_id for c in converted}
    customer = next(c.customer_id for c in opened if c.customer_id in sent and c.customer_id in converted_ids)
    add_engagements(store, [(tenant, None, None, customer, "unsubscribe")], now - timedelta(days=1))
    return customer


def _bandit(store: Store, tenant: str, now: datetime) -> None:
    with store.tx() as tx:
        for day, (short, trials) in enumerate(((0.5, 0), (0.62, 40), (0.71, 90))):
            at = tx.ts(now - timedelta(days=3 - day))
            for variant, share in (("short", short), ("long", 1 - short)):
                tx.execute("INSERT INTO bandit_arms (tenant_id, program, variant, at, share, alpha, beta, "
                           "trials, successes) VALUES (?,?,?,?,?,?,?,?,?)",
                           (tenant, PROGRAM, variant, at, share, 1.0, 1.0, trials, trials // 4))


def _events(store: Store, tenant: str, now: datetime) -> None:
    with store.tx() as tx:
        tx.executemany("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes) "
                       "VALUES (?,?,?,?,?,?)",
                       [(tenant, f"e{i}", f"u{i % 30:04d}", "page_view",
                         tx.ts(now - timedelta(minutes=30) + timedelta(seconds=7 * i)), "{}")
                        for i in range(200)])
        tx.executemany("INSERT INTO quarantine (tenant_id, run_id, program, row, reason) "
                       "VALUES (?, 'stream', '__events', ?, ?)",
                       [(tenant, f"message {i}", "type: missing") for i in range(2)])


def _stream(store: Store, now: datetime) -> None:
    with store.tx() as tx:
        tx.executemany("INSERT INTO stream_queue (stream, body, enqueued_at, lease_until, worker) "
                       "VALUES (?,?,?,?,?)",
                       [("events", json.dumps({"id": f"q{i}"}), tx.ts(now - timedelta(seconds=90 - i)),
                         tx.ts(now + timedelta(seconds=30)) if i < 4 else None,
                         "worker-1" if i < 4 else None) for i in range(10)])

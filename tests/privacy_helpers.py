"""A customer written into every table of the store that can hold one, for the export
and deletion tests; and a search of every text column of the whole store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from ceap.delivery.consent_store import add_suppression, grant_consent, revoke_consent
from ceap.model import InboxItem
from ceap.privacy import catalog
from ceap.store import Store
from tests.outcome_helpers import add_delivery, seed


def populate(store: Store, customer: str, email: str, phone: str, now: datetime, *,
             tenant: str = "default", run: str = "r1") -> dict[str, int]:
    """The customer everywhere: candidates, deliveries and their events, profile, consent and
    its history, event log, timers, inbox, outcomes, quarantine, queued events, links..."""
    [cid] = seed(store, now, 1, run=run, customer_id=lambda i: customer, tenant_id=lambda i: tenant,
                 payload=lambda i: json.dumps({"email": email}))
    did = add_delivery(store, cid, sent_at=now)
    ts = now.replace(tzinfo=None)
    with store.tx() as tx:
        stamp = tx.ts(now)
        tx.execute("INSERT INTO delivery_events (tenant_id, delivery_id, status, detail, created_at) "
                   "VALUES (?,?,?,?,?)", (tenant, did, "sent", f"accepted for {email}", stamp))
        tx.execute("INSERT INTO profiles (tenant_id, customer_id, email, phone, push_token, timezone, "
                   "locale, attributes, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                   (tenant, customer, email, phone, None, "Europe/Paris", "fr",
                    json.dumps({"tier": "gold"}), stamp))
        tx.execute("INSERT INTO event_log (tenant_id, event_id, customer_id, type, ts, attributes) "
                   "VALUES (?,?,?,?,?,?)", (tenant, f"ev-{run}-{customer}", customer, "login",
                                            tx.ts(now), json.dumps({"ip": "10.0.0.1"})))
        tx.execute("INSERT INTO timers (tenant_id, program, customer_id, event_id, fire_at, after_ts) "
                   "VALUES (?,?,?,?,?,?)", (tenant, "cart", customer, f"ev-{run}-{customer}",
                                            tx.ts(now + timedelta(hours=1)), tx.ts(now)))
        tx.execute("INSERT INTO engagements (tenant_id, delivery_id, candidate_id, program, customer_id, "
                   "channel, type, ts, source, url, dedup_key, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   (tenant, did, cid, "offer", customer, "email", "opened", stamp, "pixel", None,
                    f"open-{did}", stamp))
        tx.execute("INSERT INTO goal_events (tenant_id, event_id, customer_id, type, ts, value, recorded_at) "
                   "VALUES (?,?,?,?,?,?,?)", (tenant, f"goal-{run}-{customer}", customer, "purchase",
                                              stamp, 12.5, stamp))
        tx.execute("INSERT INTO conversions (tenant_id, program, candidate_id, customer_id, event_id, "
                   "event_type, value, event_ts, touch_ts, attributed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (tenant, "offer", cid, customer, f"goal-{run}-{customer}", "purchase", 12.5, stamp,
                    stamp, stamp))
        tx.execute("INSERT INTO learned_outcomes (tenant_id, candidate_id, program, converted, model, "
                   "learned_at) VALUES (?,?,?,?,?,?)", (tenant, cid, "offer", True, "m@1", stamp))
        tx.execute("INSERT INTO quarantine (tenant_id, run_id, program, row, reason) VALUES (?,?,?,?,?)",
                   (tenant, run, "offer", json.dumps({"customer_id": customer, "email": email,
                                                      "age": "n/a"}), "age: not an integer"))
        tx.execute("INSERT INTO quarantine (tenant_id, run_id, program, row, reason) VALUES (?,?,?,?,?)",
                   (tenant, run, "offer", f"raw line;{phone};broken", "unreadable"))
        tx.execute("INSERT INTO stream_queue (stream, body, enqueued_at) VALUES (?,?,?)",
                   ("ingest", json.dumps({"id": f"q-{customer}", "type": "login", "ts": ts.isoformat() + "Z",
                                          "customer_id": customer, "tenant_id": tenant,
                                          "attributes": {}}), stamp))
        tx.execute("INSERT INTO tracked_links (tenant_id, hash, url, issued_at) VALUES (?,?,?,?)",
                   (tenant, f"h-{customer}", f"https://shop.example/u/{customer}/basket", stamp))
        tx.execute("INSERT INTO runs (run_id, tenant_id, program, status, started_at, error) "
                   "VALUES (?,?,?,?,?,?)", (f"failed-{run}", tenant, "offer", "failed", stamp,
                                            f"bad row of {customer}"))
    store.inbox_add([InboxItem(tenant_id=tenant, customer_id=customer, idempotency_key=f"in-{customer}",
                               program="offer", title="Hello", body=f"Hi {email}", payload={},
                               candidate_id=cid)])
    grant_consent(store, tenant, customer, "email", "*", source="signup", now=now)
    revoke_consent(store, tenant, customer, "email", "offer", source="support", now=now)
    add_suppression(store, tenant, "sms", phone, "sms_stop", now=now)
    return {"candidate": cid, "delivery": did}


def text_hits(store: Store, *needles: str) -> dict[str, list[Any]]:
    """Every row of every table whose text (any column) contains a needle, by table."""
    hits: dict[str, list[Any]] = {}
    with store.tx() as tx:
        for table, columns in catalog.store_tables(tx).items():
            names = [c for c, _ in columns]
            for row in tx.execute(f"SELECT * FROM {table}").fetchall():
                text = " ".join(json.dumps(v, default=str) if not isinstance(v, str) else v for v in row)
                if any(n.lower() in text.lower() for n in needles):
                    hits.setdefault(table, []).append(dict(zip(names, row, strict=True)))
    return hits

"""The programs and events of the real-time benchmarks (``bench/realtime.py`` and the
scripts that import it): the crash-count program, the sequence/absence one, and three
days of generated events for a number of customers."""

from __future__ import annotations

import heapq
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 11, 20, tzinfo=UTC)
PROGRAM = {
    "name": "predictive_issue_resolution",
    "description": "Customers whose app keeps crashing get a support outreach before they call.",
    "source": {"type": "events", "on": ["app_crash"],
               "columns": {"app_version": "string", "app": "string"}},
    "state": {"crashes_24h": {"count": "app_crash", "window": "24h"}},
    "filters": [{"id": "repeated_crashes", "expr": "crashes_24h >= 3"},
                {"id": "supported_version", "expr": "app_version <> '4.0.0'"}],
    "scorer": {"type": "expression", "expr": "least(1.0, 0.1 + crashes_24h / 10.0)"},
    "selection": {"threshold": 0.3},
    "action": {"type": "alert", "channels": ["email"], "category": "transactional",
               "payload_columns": ["crashes_24h", "app_version", "app"]},
}
#: a sequence and an absence feature (issue 10's second benchmark program)
SEQUENCE_ABSENCE = {
    "name": "login_purchase_support",
    "description": "A purchase soon after a login gets a thank-you; a support contact with no "
                   "purchase within the hour gets an offer.",
    "source": {"type": "events", "on": ["purchase"], "columns": {"amount": "float"}},
    "state": {"login_then_buy": {"sequence": {"first": "login", "then": "purchase"}, "within": "10m",
                                 "capture": ["country"]},
              "no_purchase_1h": {"absence": {"after": "support_contact", "missing": "purchase"},
                                 "within": "1h"}},
    "filters": [{"id": "sequence_or_absence", "expr": "login_then_buy OR no_purchase_1h"}],
    "scorer": {"type": "expression", "expr": "CASE WHEN no_purchase_1h THEN 0.8 ELSE 0.6 END"},
    "selection": {"threshold": 0.3},
    "action": {"type": "offer", "channels": ["email"],
               "payload_columns": ["login_then_buy", "no_purchase_1h", "login_then_buy_country"]},
}
PROGRAMS = {"count": PROGRAM, "sequence_absence": SEQUENCE_ABSENCE}
#: with ``follow_ups``: the share of logins followed by a purchase 1-9 minutes later (the
#: sequence), and of support contacts followed by one 5-55 minutes later (no absence row)
LOGIN_THEN_BUY, CONTACT_THEN_BUY = 0.3, 0.5
TYPES = ["app_crash", "page_view", "login", "support_contact", "purchase"]
TYPE_SHARE = [0.3, 0.4, 0.15, 0.1, 0.05]
APPS = ["ios", "android", "web"]
VERSIONS = ["5.2.1", "5.2.0", "5.1.4", "4.0.0"]
PAGES = ["/home", "/orders", "/help", "/account", "/checkout", "/search"]


# -- events -----------------------------------------------------------------
def make_event(rng: random.Random, eid: str, customer: str, etype: str, ts: datetime) -> dict[str, Any]:
    if etype == "app_crash":
        attrs: dict[str, Any] = {"app": rng.choice(APPS), "app_version": rng.choice(VERSIONS),
                                 "error_code": f"E{rng.randrange(100, 999)}", "screen": rng.choice(PAGES)}
    elif etype == "page_view":
        attrs = {"page": rng.choice(PAGES), "duration_ms": rng.randrange(50, 20_000)}
    elif etype == "login":
        attrs = {"device_id": f"d{rng.randrange(10**6)}", "country": rng.choice(["US", "GB", "DE"])}
    elif etype == "purchase":
        attrs = {"amount": round(rng.uniform(5, 300), 2), "currency": "USD"}
    else:
        attrs = {"channel": rng.choice(["chat", "phone", "email"])}
    return {"id": eid, "type": etype, "ts": ts.isoformat().replace("+00:00", "Z"),
            "customer_id": customer, "attributes": attrs}


def historic_events(n: int, customers: int, seed: int, follow_ups: bool = False) -> list[bytes]:
    """``n`` events over three days of event time, mostly in order (a few seconds of
    jitter). Crashes come from a tenth of the customers, so some of them cross the
    filter; every other type from anyone. With ``follow_ups``, some logins and support
    contacts are followed by a purchase of the same customer (``LOGIN_THEN_BUY``,
    ``CONTACT_THEN_BUY``), sent in its place in event time; without, the events are the
    same as they always were for ``seed``."""
    rng = random.Random(seed)
    span = timedelta(days=3).total_seconds()
    unstable = max(1, customers // 10)
    out = []
    planned: list[tuple[datetime, int, int]] = []  # (ts, order, customer) of planned purchases
    for i in range(n):
        now = T0 + timedelta(seconds=i * span / n)
        if planned and planned[0][0] <= now:
            ts, _, who = heapq.heappop(planned)
            etype = "purchase"
        else:
            etype = rng.choices(TYPES, TYPE_SHARE)[0]
            who = rng.randrange(unstable) if etype == "app_crash" else rng.randrange(customers)
            ts = now + timedelta(seconds=rng.uniform(-5, 5))
            if follow_ups and etype == "login" and rng.random() < LOGIN_THEN_BUY:
                heapq.heappush(planned, (ts + timedelta(minutes=rng.uniform(1, 9)), i, who))
            elif follow_ups and etype == "support_contact" and rng.random() < CONTACT_THEN_BUY:
                heapq.heappush(planned, (ts + timedelta(minutes=rng.uniform(5, 55)), i, who))
        out.append(json.dumps(make_event(rng, f"h{i}", f"C{who:07d}", etype, ts),
                              separators=(",", ":")).encode())
    return out

"""The demo's delivery half: profiles, a local SMTP server, policies, dispatch.

E-mails go to an SMTP server the demo starts on 127.0.0.1 (aiosmtpd); in-app
messages fill the store's inbox. A per-customer cap of one message a day makes
programs compete for the same customers, so arbitration shows in the report.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
from aiosmtpd.controller import Controller
from rich.console import Console
from rich.table import Table

from ceap.channels.email_smtp import SmtpChannel
from ceap.channels.inapp import InAppChannel
from ceap.channels.sms_twilio import TwilioSmsChannel
from ceap.channels.webhook import WebhookChannel
from ceap.delivery.consent_store import revoke_consent
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.digest import counts as digest_counts
from ceap.delivery.dispatcher import Dispatcher, DispatchStats
from ceap.delivery.policies import default_policies
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.templates import TemplateRenderer
from ceap.demo.data import COUNTRIES, customer_ids
from ceap.model import DEFAULT_TENANT
from ceap.plugin import PluginContext
from ceap.spec.program import ProgramSpec
from ceap.store.base import Store

PROFILES = "profiles.parquet"
DEMO_TOKEN_ENV = "CEAP_DEMO_SMS_TOKEN"
DEMO_CRM_SECRET_ENV = "CEAP_DEMO_CRM_SECRET"
TIMEZONES = {"US": "America/New_York", "GB": "Europe/London", "DE": "Europe/Berlin",
             "FR": "Europe/Paris", "ES": "Europe/Madrid", "IT": "Europe/Rome",
             "CA": "America/Toronto", "JP": "Asia/Tokyo"}
LOCALES = {"US": "en-US", "GB": "en-GB", "DE": "de-DE", "FR": "fr-FR", "ES": "es-ES", "IT": "it-IT",
           "CA": "en-CA", "JP": "ja-JP"}
#: the demo's policies: one message per customer a day, marketing e-mail with one-click unsubscribe;
#: the account managers' call tasks (churn_prevention) reach no customer: no cap, no consent
DEMO_DELIVERY = {"caps": {"per_customer": [{"max": 1, "window": "1d"}],
                          "exempt_channels": ["account_manager"]},
                 "consent": {"channels": {"account_manager": {
                     "marketing": "exempt", "transactional": "exempt", "security": "exempt"}}},
                 "templates": {"unsubscribe_url": "https://ceap.example/v1/unsubscribe"}}


def generate_profiles(data_dir: Path, customers: int, seed: int) -> Path:
    """Contact details for the demo customers: 3% have no e-mail address on file."""
    rng = np.random.default_rng(seed + 1)
    ids = customer_ids(1, customers)
    country = COUNTRIES[rng.integers(0, len(COUNTRIES), customers)]
    has_email = rng.random(customers) >= 0.03
    emails = np.char.add(np.char.lower(ids), "@customers.example")
    path = Path(data_dir) / PROFILES
    pq.write_table(pa.table({
        "customer_id": pa.array(ids, pa.string()),
        "email": pa.array(emails, pa.string(), mask=~has_email),
        "phone": pa.array(np.char.add("+1555", np.char.zfill(np.arange(customers).astype(str), 7)),
                          pa.string()),
        "timezone": pa.array([TIMEZONES[c] for c in country], pa.string()),
        "locale": pa.array([LOCALES[c] for c in country], pa.string()),
    }), path)
    return path


class TwilioSink(http.server.ThreadingHTTPServer):
    """A local stand-in for Twilio's Messages API: accepts every SMS, counts them."""

    def __init__(self) -> None:
        self.sent = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.sent += 1
                    sid = f"SM{sink.sent:032d}"
                body = json.dumps({"sid": sid, "status": "queued"}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@dataclass
class Inbox:
    """What the demo's SMTP server received."""

    messages: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(envelope.content)
        return "250 OK"


def dispatch_demo(project_dir: Path, store: Store, programs: list[ProgramSpec], customers: int,
                  seed: int, console: Console) -> DispatchStats:
    """Load profiles, start the SMTP server, dispatch every due candidate, print the outcome."""
    data_dir = Path(project_dir) / "data"
    path = data_dir / PROFILES
    if not path.exists():
        generate_profiles(data_dir, customers, seed)
    upsert_profiles(store, pq.read_table(path), DEFAULT_TENANT)
    _profiles_for_poc_customers(store)
    for customer in customer_ids(1, customers)[::40]:  # 2.5% unsubscribed from marketing e-mail
        revoke_consent(store, DEFAULT_TENANT, str(customer), "email", source="demo")
    received = Inbox()
    with socket.socket() as probe:  # a free port (aiosmtpd cannot start on port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Controller(received, hostname="127.0.0.1", port=port)
    server.start()
    sms = TwilioSink()
    crm = TwilioSink()  # a local CRM taking the account managers' call tasks (any POST is accepted)
    os.environ.setdefault(DEMO_TOKEN_ENV, secrets.token_hex(16))  # made now, for the local sink only
    os.environ.setdefault(DEMO_CRM_SECRET_ENV, secrets.token_hex(16))
    try:
        config = DeliveryConfig.model_validate(DEMO_DELIVERY)
        context = PluginContext(base_dir=Path(project_dir), store=store)
        channels = {
            "email": SmtpChannel.from_dict({"type": "smtp", "host": "127.0.0.1",
                                            "port": port,
                                            "security": "none",
                                            "from_address": "CEAP demo <demo@ceap.example>"}),
            "inapp": InAppChannel.from_dict({"type": "inapp"}, context),
            "sms": TwilioSmsChannel.from_dict({
                "type": "twilio_sms", "base_url": f"http://127.0.0.1:{sms.server_address[1]}",
                "account_sid": "AC" + "0" * 32, "auth_token_env": DEMO_TOKEN_ENV,
                "from_number": "+15550000000", "allow_private": True, "rate_per_sec": 2000}),
            "account_manager": WebhookChannel.from_dict({
                "type": "webhook", "url": f"http://127.0.0.1:{crm.server_address[1]}/call-tasks",
                "secret_env": DEMO_CRM_SECRET_ENV, "event": "ceap.task", "action": "create_call_task",
                "allow_private": True}),
        }
        dispatcher = Dispatcher(store, channels, programs={p.name: p for p in programs},
                                policies=default_policies(config),
                                renderer=TemplateRenderer.from_config(
                                    config, project_dir, secret=secrets.token_urlsafe(32)))
        with console.status("dispatching: policies, templates, SMTP and in-app..."):
            stats = dispatcher.run()
        for channel in channels.values():
            channel.close()
    finally:
        server.stop()
        sms.shutdown()
        crm.shutdown()
    console.print()
    console.print(delivery_table(store, programs))
    inbox = _count(store, "SELECT count(*) FROM inbox WHERE tenant_id = ?")
    console.print(f"the local SMTP server received [bold]{len(received.messages):,}[/bold] e-mails; "
                  f"the local SMS gateway [bold]{sms.sent:,}[/bold] texts; "
                  f"the local CRM [bold]{crm.sent:,}[/bold] call tasks; "
                  f"in-app inboxes hold [bold]{inbox:,}[/bold] messages")
    held = digest_counts(store)
    if any(held.values()):
        messages = _count(store, "SELECT count(*) FROM candidates WHERE tenant_id = ? AND run_id = 'digest'")
        console.print(f"digests: [bold]{messages:,}[/bold] digest messages listing "
                      f"{held.get('digested', 0):,} candidates; {held.get('in_digest', 0):,} still held "
                      "for a digest not due yet (docs/digests.md)")
    return stats


def _profiles_for_poc_customers(store: Store) -> None:
    """The proof-of-concept data sets (Telco, MovieLens, the fraud simulation) carry no
    contact details: give their customers demo addresses so their actions can be sent."""
    with store.tx() as tx:
        missing = [r[0] for r in tx.execute(
            "SELECT DISTINCT customer_id FROM candidates c WHERE tenant_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM profiles p WHERE p.tenant_id = c.tenant_id "
            "AND p.customer_id = c.customer_id)", (DEFAULT_TENANT,)).fetchall()]
    if missing:
        ids = pa.array(missing, pa.string())
        emails = pa.compute.binary_join_element_wise(
            pa.compute.utf8_lower(pa.compute.replace_substring_regex(ids, "[^A-Za-z0-9]", "-")),
            "@customers.example", "")
        upsert_profiles(store, pa.table({"customer_id": ids, "email": emails,
                                         "timezone": pa.array(["UTC"] * len(missing))}),
                        DEFAULT_TENANT)


def _count(store: Store, sql: str) -> int:
    with store.tx() as tx:
        return int(tx.execute(sql, (DEFAULT_TENANT,)).fetchone()[0])


def delivery_table(store: Store, programs: list[ProgramSpec]) -> Table:
    """Per program: sent per channel, and what the policies suppressed, by policy."""
    with store.tx() as tx:
        rows = tx.execute(
            "SELECT program, channel, status, COALESCE(policy, ''), count(*) FROM deliveries "
            "WHERE tenant_id = ? GROUP BY program, channel, status, COALESCE(policy, '')",
            (DEFAULT_TENANT,)).fetchall()
    table = Table(title="delivery", title_justify="left")
    for column in ("program", "sent", "suppressed by policy", "other"):
        table.add_column(column)
    for spec in programs:
        mine = [r for r in rows if r[0] == spec.name]
        sent = ", ".join(f"{n:,} {ch}" for _, ch, status, _, n in mine
                         if status in ("sent", "delivered")) or "0"
        policies: dict[str, int] = {}
        for _, _, status, policy, n in mine:
            if status == "suppressed":
                name = policy.split(":")[0] + (f":{policy.split(':')[1]}"
                                               if policy.startswith("frequency_cap") else "")
                policies[name] = policies.get(name, 0) + n
        suppressed = ", ".join(f"{n:,} {p}" for p, n in sorted(policies.items())) or "0"
        other = ", ".join(f"{n:,} {status}" for _, _, status, _, n in mine
                          if status not in ("sent", "delivered", "suppressed"))
        table.add_row(spec.name, sent, suppressed, other)
    return table

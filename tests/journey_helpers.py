"""A journey project for flow tests: programs in a folder, events through the real worker
(a replay stream), ``tick`` and the real dispatcher on a fake clock, e-mail to a local
aiosmtpd server and SMS to a local stand-in for Twilio's API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from ceap.channels.email_smtp import SmtpChannel
from ceap.channels.sms_twilio import TwilioSmsChannel
from ceap.delivery.consent_store import grant_consent
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.outbox import Outbox
from ceap.delivery.policies import default_policies
from ceap.delivery.profiles import upsert_profiles
from ceap.journeys.engine import TickStats, tick
from ceap.journeys.state import Entry, customer_entries
from ceap.journeys.ticker import JourneyPrograms, JourneyTicker
from ceap.model import Candidate, CandidateQuery
from ceap.plugin import PluginContext
from ceap.realtime.replay import ReplayConnector
from ceap.realtime.worker import Worker
from ceap.spec import load_program
from ceap.store import Store
from ceap.testing import FakeClock
from tests.provider_server import ProviderServer, Reply, serve
from tests.test_channel_email import Mailbox, Smtpd

#: a fixed start, 10:00 UTC: the fake clock moves from here, inside SMS sending hours
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
TWILIO_TOKEN = "tw-journey-token"
DELIVERY = {"templates": {"unsubscribe_url": "https://ceap.example/v1/unsubscribe"}}


@pytest.fixture
def smtpd() -> Iterator[Smtpd]:
    server = Smtpd(Mailbox())
    yield server
    server.stop()


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderServer]:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    monkeypatch.setenv("CEAP_SIGNING_SECRET", "journey-test-secret")
    for server in serve():
        sent: list[str] = []
        server.sent = sent  # type: ignore[attr-defined]

        def provider(request: Any, sent: list[str] = sent) -> Reply:
            sent.append(request.form()["To"])
            return Reply(201, {"sid": f"SM{len(sent)}", "status": "queued"})

        server.default = provider
        yield server


def events_program(name: str, on: str, journey: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A real-time program entering every customer with an ``on`` event into ``journey``."""
    return {"name": name, "source": {"type": "events", "on": [on], **extra.pop("source", {})},
            "selection": {"dedup_window": "1h"},
            "action": {"type": "inform", "channels": ["email"], **extra.pop("action", {})},
            "journey": journey, **extra}


class StreamProject:
    """The program ``nudge`` (entering on ``signup`` into ``journey``) in ``root/programs``, a
    fake clock from :data:`T0`, and workers over replayed events at the clock's time."""

    def __init__(self, root: Path, store: Store, journey: dict[str, Any]):
        self.root, self.store = root, store
        self.programs = root / "programs"
        self.programs.mkdir()
        (self.programs / "nudge.yaml").write_text(yaml.safe_dump(events_program("nudge", "signup", journey)))
        self.context = PluginContext(base_dir=root, store=store)
        self.clock = FakeClock(T0)
        self.replays = 0
        self.journeys: JourneyTicker | None = None  # the ticker of a worker made without one

    def ticker(self, holder: str, store: Store | None = None, every: float = 5,
               beat_every: float | None = None) -> JourneyTicker:
        """A ticker of the programs on the fake clock, every ``every`` seconds by it."""
        return JourneyTicker(store or self.store, JourneyPrograms(self.programs),
                             every=timedelta(seconds=every), clock=self.clock, holder=holder,
                             beat_every=beat_every)

    def worker(self, *events: tuple[str, str], journeys: JourneyTicker | None = None) -> Worker:
        """A worker over a replay of ``(customer, type)`` events at the clock's time, ticking
        with ``journeys`` (default :attr:`journeys`; neither: it does not tick)."""
        self.replays += 1
        path = self.root / f"events{self.replays}.jsonl"
        path.write_text("\n".join(json.dumps({"id": f"e{self.replays}-{i}", "customer_id": c, "type": kind,
                                              "ts": self.clock().isoformat()})
                                  for i, (c, kind) in enumerate(events)))
        source = ReplayConnector.from_dict({"type": "replay", "path": path.name}, self.context)
        return Worker(self.store, source, self.programs, self.context, reload_every=0, clock=self.clock,
                      journeys=journeys or self.journeys)

    def signups(self, *customers: str, journeys: JourneyTicker | None = None) -> Worker:
        """A worker over one ``signup`` per customer (see :meth:`worker`)."""
        return self.worker(*[(c, "signup") for c in customers], journeys=journeys)

    def journey_messages(self) -> list[Candidate]:
        """The messages the journey of ``nudge`` wrote."""
        found = self.store.candidates(CandidateQuery(program="nudge", limit=1000, include_expired=True))
        return [c for c in found if c.dedup_key.startswith("journey:")]


class JourneyProject:
    """Programs in ``root/programs``; the store; a fake clock; the worker, tick and dispatcher."""

    def __init__(self, root: Path, store: Store, smtpd: Smtpd, twilio: ProviderServer):
        self.root, self.store = root, store
        self.programs = root / "programs"
        self.programs.mkdir(exist_ok=True)
        self.context = PluginContext(base_dir=root, store=store)
        self.clock = FakeClock(T0)
        self.smtpd, self.twilio = smtpd, twilio
        self.channels = {
            "email": SmtpChannel.from_dict(smtpd.config()),
            "sms": TwilioSmsChannel.from_dict({"type": "twilio_sms", "base_url": twilio.url,
                                               "account_sid": "AC123", "from_number": "+15550000000",
                                               "timeout": 2, "allow_private": True}),
        }
        self.replays = 0

    def write(self, spec: dict[str, Any]) -> None:
        (self.programs / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))

    def specs(self) -> list[Any]:
        return [load_program(p) for p in sorted(self.programs.glob("*.yaml"))]

    def customers(self, *ids: str, sms_consent: bool = True) -> None:
        upsert_profiles(self.store, pa.table({"customer_id": list(ids),
                                              "email": [f"{c}@example.com" for c in ids],
                                              "phone": [f"+1555{i:07d}" for i, _ in enumerate(ids, 1000)]}),
                        "default")
        if sms_consent:
            for c in ids:
                grant_consent(self.store, "default", c, "sms", now=self.clock())

    def phone(self, customer: str) -> str:
        with self.store.tx() as tx:
            found = tx.execute("SELECT phone FROM profiles WHERE customer_id = ?", (customer,)).fetchone()
        return str(found[0])

    def events(self, *items: tuple[str, str, str, dict[str, Any]]) -> None:
        """``(event id, customer, type, attributes)`` at the clock's time, through the worker."""
        self.replays += 1
        path = self.root / f"events{self.replays}.jsonl"
        path.write_text("\n".join(json.dumps({"id": eid, "customer_id": c, "type": kind,
                                              "ts": self.clock().isoformat(), "attributes": attrs})
                                  for eid, c, kind, attrs in items))
        source = ReplayConnector.from_dict({"type": "replay", "path": path.name}, self.context)
        worker = Worker(self.store, source, self.programs, self.context, reload_every=0,
                        clock=self.clock)
        try:
            worker.run(until_idle=True)
        finally:
            worker.close()

    def tick(self) -> TickStats:
        return tick(self.store, self.specs(), now=self.clock())

    def dispatch(self) -> None:
        Dispatcher(self.store, self.channels, policies=default_policies(DELIVERY), clock=self.clock,
                   pipeline=False, sleep=lambda seconds: self.clock.advance(seconds=seconds)).run()

    def step(self) -> TickStats:
        """A tick, then a dispatch pass: what a deployment does every poll."""
        stats = self.tick()
        self.dispatch()
        return stats

    def later(self, **kw: float) -> None:
        self.clock.advance(**kw)

    def messages(self, program: str) -> list[Candidate]:
        return [c for c in self.store.candidates(CandidateQuery(program=program, limit=10_000,
                                                                include_expired=True))
                if c.dedup_key.startswith("journey:")]

    def sent(self, customer: str) -> list[str]:
        """Channels of the customer's deliveries that were sent, oldest first."""
        out = Outbox(self.store, "test")
        return [d.channel for d in sorted(out.deliveries("default"), key=lambda d: d.id)
                if d.customer_id == customer and d.status in ("sent", "delivered")]

    def delivery_id(self, customer: str, channel: str) -> int:
        out = Outbox(self.store, "test")
        return next(d.id for d in out.deliveries("default") if d.customer_id == customer
                    and d.channel == channel)

    def entries(self, customer: str, program: str) -> list[Entry]:
        with self.store.tx() as tx:
            return customer_entries(tx, "default", customer, program)

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)

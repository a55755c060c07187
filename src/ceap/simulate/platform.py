"""The real platform, driven by the simulator: one project folder and one store.

Every step goes through CEAP's own code paths:

- ``run``: the cohort's Parquet file is the program's source; ``run_program`` selects,
  assigns arms and variants (and, with a bandit, first attributes and updates the
  shares), and writes the candidates;
- ``dispatch``: a ``Dispatcher`` pass with the default policies to the in-app inbox and,
  when an arm uses e-mail, to a local SMTP server (``Mailbox``);
- ``ingest``: events go to ``POST /v1/events`` of the HTTP API (``create_app`` over
  FastAPI's ``TestClient``), which queues them on the embedded stream, and the real-time
  ``Worker`` consumes them: goal events land in ``goal_events``, reported engagements in
  ``engagements``;
- ``follow``: e-mail engagement as a reader does it: the open pixel (``GET /t/o/...``),
  a tracked link (``GET /t/c/...``) and the one-click unsubscribe (``POST /v1/unsubscribe``);
- ``attribute`` and ``report``: ``ceap.outcomes.attribution.attribute`` and
  ``ceap.experiments.uplift.uplift_report``.

All times come from ``clock`` (a ``FakeClock`` the simulator moves), never the wall clock.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

with warnings.catch_warnings():  # starlette's note about httpx: harmless for an in-process client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from ceap.api.app import create_app
from ceap.channels.base import Channel
from ceap.channels.email_smtp import SmtpChannel
from ceap.channels.inapp import InAppChannel
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.dispatcher import Dispatcher, DispatchStats
from ceap.delivery.policies import default_policies
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.templates import TemplateRenderer
from ceap.delivery.unsubscribe import has_signing_secret
from ceap.experiments.uplift import UpliftReport, uplift_report
from ceap.model import DEFAULT_TENANT
from ceap.outcomes.attribution import AttributionResult, attribute
from ceap.outcomes.config import TrackingConfig
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedStream
from ceap.realtime.worker import Worker
from ceap.runtime import RunResult, run_program
from ceap.simulate.design import SOURCE, Design
from ceap.simulate.mailbox import Mailbox
from ceap.simulate.responses import Contacts, Engagement
from ceap.spec import load_program
from ceap.store.base import Store, open_store
from ceap.store.schema import from_iso
from ceap.testing import FakeClock

#: the API's address inside ``TestClient``: tracked links point here
BASE_URL = "http://testserver"
EVENTS_PER_REQUEST = 5_000
#: candidates per dispatcher pass: a whole cohort in one or two passes
DISPATCH_BATCH = 5_000


class Platform:
    """CEAP over ``store_url`` (or an open ``store``) and ``project_dir``; see the module doc."""

    def __init__(self, project_dir: Path, design: Design, clock: FakeClock, *,
                 store_url: str | None = None, store: Store | None = None,
                 tenant: str = DEFAULT_TENANT, global_control: float = 0.0,
                 delivery: dict[str, Any] | None = None):
        started = time.perf_counter()
        self.dir = Path(project_dir)
        self.design = design
        self.clock = clock
        self.spec = load_program(design.write(self.dir))
        self.timings: dict[str, float] = defaultdict(float)
        self._own = store is None
        base = PluginContext(base_dir=self.dir, tenant=tenant, global_control=global_control)
        if store is None:
            if store_url is None:
                raise ValueError("give store_url or store")
            store = open_store(store_url, context=base)
        self.store = store
        self.context = replace(base, store=store)
        email = any(a.channel == "email" for a in design.arms)
        if email:
            if not has_signing_secret():
                raise ValueError("e-mail arms need CEAP_SIGNING_SECRET (tracked links, unsubscribe)")
            if design.template is None:
                raise ValueError("e-mail arms need design.template (the e-mail's text and links)")
            write_template(self.dir, design.template)
            delivery = {"templates": {"unsubscribe_url": f"{BASE_URL}/v1/unsubscribe"},
                        **(delivery or {})}
        self.delivery = DeliveryConfig.model_validate(delivery or {})
        self.mailbox = Mailbox() if email else None
        self.channels = self._channels()
        tracking = (TrackingConfig.model_validate({"base_url": BASE_URL}) if self.mailbox is not None
                    else None)
        self.renderer = TemplateRenderer.from_config(self.delivery, self.dir, tracking=tracking,
                                                     store=store, clock=clock)
        stream = f"sim-{uuid.uuid4().hex[:12]}"
        queue = {"type": "embedded", "stream": stream}
        ingest = EmbeddedStream.from_dict(queue, self.context)
        app = create_app(store, auth=False, ingest=ingest, default_tenant=tenant)
        app.state.clock, app.state.tracking = clock, tracking
        # entered once: one event loop thread for every request, not one per request
        self.api = TestClient(app, base_url=BASE_URL).__enter__()
        self.worker = Worker(store, EmbeddedStream.from_dict(queue, self.context),
                             self.dir / "programs", self.context, batch=EVENTS_PER_REQUEST, clock=clock)
        self.timings["setup"] = time.perf_counter() - started

    def _channels(self) -> dict[str, Channel[Any]]:
        channels: dict[str, Channel[Any]] = {"inapp": InAppChannel.from_dict({"type": "inapp"},
                                                                             self.context)}
        if self.mailbox is not None:
            channels["email"] = SmtpChannel.from_dict({
                "type": "smtp", "host": "127.0.0.1", "port": self.mailbox.port, "security": "none",
                "from_address": "Offers <offers@shop.example>"})
        return channels

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - start

    # -- the steps ---------------------------------------------------------------
    def run(self, cohort: pa.Table, now: datetime) -> RunResult:
        """Make ``cohort`` the source (and its customers' profiles) and run the program at ``now``."""
        with self.timed("run"):
            path = self.dir / SOURCE
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(cohort.drop_columns([c for c in ("email",) if c in cohort.column_names]),
                           path)
            profiles = {"customer_id": cohort.column("customer_id"),
                        "timezone": pa.array(["UTC"] * cohort.num_rows)}
            if "email" in cohort.column_names:
                profiles["email"] = cohort.column("email")
            upsert_profiles(self.store, pa.table(profiles), self.context.tenant)
            self.clock.now = now
            return run_program(self.spec, self.store, self.context, now=now)

    def dispatch(self, at: datetime) -> DispatchStats:
        """Send every due candidate of the program, with the clock at ``at``."""
        with self.timed("dispatch"):
            self.clock.now = at
            dispatcher = Dispatcher(self.store, self.channels, programs={self.spec.name: self.spec},
                                    policies=default_policies(self.delivery), renderer=self.renderer,
                                    clock=self.clock, batch_size=DISPATCH_BATCH)
            return dispatcher.run()

    def contacts(self, run_id: str) -> Contacts:
        """The run's candidates, with the delivery that reached each (if any), by customer id
        (a canonical order: the simulator's draws do not depend on the order rows were written)."""
        with self.timed("read"), self.store.tx() as tx:
            rows = tx.execute(
                "SELECT c.id, c.customer_id, c.arm, c.variant, c.not_before, d.id, d.channel, d.sent_at "
                "FROM candidates c LEFT JOIN deliveries d ON d.candidate_id = c.id "
                "AND d.sent_at IS NOT NULL WHERE c.tenant_id = ? AND c.program = ? AND c.run_id = ? "
                "ORDER BY c.customer_id, c.id", (self.context.tenant, self.spec.name, run_id)).fetchall()
        unique: list[Any] = []
        for r in rows:  # ordered by candidate: keep one sent delivery each
            if not unique or unique[-1][0] != r[0]:
                unique.append(r)
        return Contacts(np.array([int(r[0]) for r in unique], dtype=np.int64),
                        [str(r[1]) for r in unique], [str(r[2]) for r in unique],
                        [r[3] for r in unique], [_ts(r[4]) for r in unique],
                        [None if r[5] is None else int(r[5]) for r in unique],
                        [r[6] for r in unique], [from_iso(r[7]) for r in unique])

    def ingest(self, events: Sequence[dict[str, Any]], at: datetime) -> int:
        """POST ``events`` to ``/v1/events`` and let the worker consume them; returns how
        many the API accepted (a rejected event is an error: the simulator sends valid ones)."""
        accepted = 0
        with self.timed("ingest"):
            self.clock.now = at
            for start in range(0, len(events), EVENTS_PER_REQUEST):
                answer = self.api.post("/v1/events", json=list(events[start:start + EVENTS_PER_REQUEST]))
                body = answer.json()
                if answer.status_code != 202 or body["rejected"]:
                    raise RuntimeError(f"/v1/events answered {answer.status_code}: {body}")
                accepted += int(body["accepted"])
            self.worker.run(until_idle=True)
        return accepted

    def follow(self, engagements: Sequence[Engagement]) -> dict[str, int]:
        """E-mail engagement as the reader does it: load the pixel, follow a tracked link,
        unsubscribe with one click (each at the engagement's time). Returns the HTTP
        status counts."""
        if self.mailbox is None:
            raise RuntimeError("no e-mail arm: nothing to follow")
        statuses: dict[str, int] = defaultdict(int)
        with self.timed("follow"):
            links = {mail.to.split("@")[0].lower(): mail for mail in self.mailbox.take()}
            for e in sorted(engagements, key=lambda e: e.ts):
                mail = links.get(e.customer_id.lower())
                if mail is None:
                    continue
                self.clock.now = e.ts
                if e.kind == "open" and mail.pixel:
                    answer = self.api.get(mail.pixel)
                elif e.kind == "click" and mail.clicks:
                    answer = self.api.get(mail.clicks[0], follow_redirects=False)
                elif e.kind == "unsubscribe" and mail.unsubscribe:
                    token = mail.unsubscribe.split("token=", 1)[-1]
                    answer = self.api.post("/v1/unsubscribe", data={"token": token})
                else:
                    continue
                statuses[f"{e.kind} {answer.status_code}"] += 1
        return dict(statuses)

    def attribute(self, now: datetime) -> AttributionResult:
        with self.timed("attribute"):
            return attribute(self.store, [self.spec], now)

    def report(self, now: datetime, by: str | None = None,
               since: datetime | None = None) -> UpliftReport:
        with self.timed("report"):
            return uplift_report(self.store, self.context.tenant, self.spec.name, now, by=by,
                                 since=since, bandit=self.spec.experiment.bandit is not None)

    def close(self) -> None:
        self.api.__exit__(None, None, None)
        self.worker.close()
        for channel in self.channels.values():
            channel.close()
        if self.mailbox is not None:
            self.mailbox.close()
        if self._own:
            self.store.close()


TEMPLATE = """\
description: the simulated discount offer (ceap.simulate)
email:
  subject: "{{ (payload.lift * 10) | round | int }}% off this week"
  text: |
    Your discount is waiting: {{ payload.url }}
    Unsubscribe: {{ unsubscribe_url }}
  html: |
    <p>Your discount is waiting: <a href="{{ payload.url }}">see the offer</a>.</p>
    <p style="font-size:small"><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
inapp:
  title: "A discount for you"
  body: "Your discount is waiting: {{ payload.url }}"
"""


def write_template(project_dir: Path, name: str) -> Path:
    """The offer's template (``templates/<name>.yaml``), unless the project has one."""
    path = Path(project_dir) / "templates" / f"{name}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEMPLATE)
    return path


def _ts(value: Any) -> datetime:
    found = from_iso(value)
    assert found is not None
    return found


__all__ = ["BASE_URL", "TEMPLATE", "Platform", "write_template"]

"""The shadow report: a shadow program's decisions (what it would have sent, to
whom, what the policies stopped) next to its live counterpart's over the same
window, on SQLite and PostgreSQL; and ``ceap report shadow``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import ceap.cli.report  # noqa: F401 - registers `ceap report`
from ceap.cli import app
from ceap.delivery.consent_store import revoke_consent
from ceap.delivery.dispatcher import Dispatcher
from ceap.delivery.policies import default_policies
from ceap.delivery.profiles import upsert_profiles
from ceap.delivery.shadow_report import (
    Overlap,
    compare_shadow,
    outcomes,
    shadow_programs,
    shadow_report,
)
from ceap.model import RunRecord
from ceap.store import Store, open_store
from ceap.testing.doubles import CaptureConfig, CapturingChannel, make_candidates

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIVE, SHADOW = "churn_prevention", "churn_v2"


class MailCapture(CapturingChannel):
    """A capturing channel that needs an e-mail address, like a real one."""

    address: ClassVar[str | None] = "email"


def candidates(store: Store, program: str, customers: list[int], at: datetime, status: str) -> None:
    store.write_run(RunRecord(f"run-{program}-{at:%j%H%M}", "default", program, "succeeded", at),
                    make_candidates(len(customers), now=at, program=program, status=status,
                                    channels=["email"], category="marketing",
                                    run_id=f"run-{program}-{at:%j%H%M}",
                                    customer_id=lambda i: f"c{customers[i]}",
                                    dedup_key=lambda i: f"{program}:{at:%j}:{customers[i]}"))


def dispatch(store: Store, at: datetime, **channel: Any) -> None:
    mail = MailCapture(CaptureConfig(outbox=uuid.uuid4().hex, **channel))
    Dispatcher(store, {"email": mail}, policies=default_policies(), clock=lambda: at).run()


def scenario(store: Store) -> None:
    """Live: c0..c9 (c8, c9 without e-mail; c1 unsubscribed). Shadow: c5..c14
    (c14 without e-mail). Two days earlier the live program also messaged c20."""
    with_email = [*range(8), *range(10, 14), 20]
    upsert_profiles(store, pa.table({"customer_id": [f"c{i}" for i in with_email],
                                     "email": [f"c{i}@example.com" for i in with_email]}), "default")
    revoke_consent(store, "default", "c1", "email", source="test")
    earlier = T0 - timedelta(days=2)
    candidates(store, LIVE, [20], earlier, "pending")
    dispatch(store, earlier)
    candidates(store, LIVE, list(range(10)), T0, "pending")
    candidates(store, SHADOW, list(range(5, 15)), T0, "shadow")
    dispatch(store, T0)


def test_shadow_decisions_next_to_the_live_program(store: Store) -> None:
    scenario(store)
    assert shadow_programs(store, "default") == [SHADOW]
    report = compare_shadow(store, "default", SHADOW, live=LIVE, samples=3)
    assert (report.since, report.until) == (T0, T0)  # the shadow program's decisions
    s, live = report.shadow, report.live
    assert live is not None
    # the shadow program: 7 would-be sends, 3 stopped by a policy, nothing sent
    assert (s.decisions, s.candidates, s.customers) == (10, 10, 10)
    assert s.statuses == {"shadow": 7, "suppressed": 3}
    assert (s.would_send, s.sent, s.suppressed) == (7, 0, 3)
    assert s.channels == {"email": {"shadow": 7, "suppressed": 3}}
    assert s.policies == {"no_address:email": 3}
    # the live program over the same window (c20, two days earlier, is outside it)
    assert (live.decisions, live.customers) == (10, 10)
    assert live.statuses == {"sent": 7, "suppressed": 3}
    assert live.policies == {"no_address:email": 2, "consent:email": 1}
    # customers: decided on (c5..c9 both) and messaged (c5, c6, c7 both)
    assert report.decided == Overlap(shadow_only=5, both=5, live_only=5)
    assert report.messaged == Overlap(shadow_only=4, both=3, live_only=4)
    assert report.messaged.jaccard == pytest.approx(3 / 11)
    # what would have been sent, and to whom
    assert [(w.customer_id, w.channel) for w in report.samples] == [("c5", "email"), ("c6", "email"),
                                                                     ("c7", "email")]
    assert report.samples[0].detail == "to=c5@example.com title='Churn v2'"
    # nothing of the shadow program left the platform
    with store.tx() as tx:
        statuses = {r[0] for r in tx.execute("SELECT status FROM candidates WHERE program = ?",
                                             (SHADOW,)).fetchall()}
    assert statuses == {"shadowed", "suppressed"}


def test_windows_and_the_default_report(store: Store) -> None:
    scenario(store)
    everything = outcomes(store, "default", LIVE)
    assert everything.statuses == {"sent": 8, "suppressed": 3}  # c20 two days earlier too
    later = compare_shadow(store, "default", SHADOW, live=LIVE, since=T0 + timedelta(hours=1))
    assert later.empty and later.live is not None and later.live.decisions == 0
    assert later.decided == Overlap(0, 0, 0) and later.samples == []
    [only] = shadow_report(store, "default", samples=0)
    assert only.shadow.program == SHADOW and only.live is None and only.decided is None
    assert only.samples == []
    assert shadow_programs(store, "default", since=T0 + timedelta(hours=1)) == []
    assert shadow_programs(store, "other-tenant") == []


def test_a_shadow_channel_of_a_live_program(store: Store) -> None:
    """A channel configured ``shadow: true`` records a live program's messages on it."""
    upsert_profiles(store, pa.table({"customer_id": ["c0", "c1"],
                                     "email": ["c0@example.com", None]}), "default")
    candidates(store, LIVE, [0, 1], T0, "pending")
    dispatch(store, T0, shadow=True)
    assert shadow_programs(store, "default") == [LIVE]
    report = compare_shadow(store, "default", LIVE, live=LIVE)
    assert report.shadow.statuses == {"shadow": 1, "suppressed": 1}
    assert report.messaged == Overlap(shadow_only=1, both=0, live_only=0)
    assert [w.customer_id for w in report.samples] == ["c0"]


runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CEAP_STORE", raising=False)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    (tmp_path / "ceap.yaml").write_text(f"store: {url}\n")
    s = open_store(url)
    try:
        scenario(s)
    finally:
        s.close()
    return tmp_path


def test_cli_report_shadow(project: Path) -> None:
    terminal = {"COLUMNS": "160", "TTY_COMPATIBLE": "1"}
    result = runner.invoke(app, ["--project", str(project), "report", "shadow", "--shadow", SHADOW,
                                 "--live", LIVE], env=terminal)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"shadow {SHADOW} vs live {LIVE}" in out
    assert "would send" in out and "no_address:email" in out
    assert "customers decided on: 5 shadow only, 5 both, 5 live only" in out
    assert "customers messaged (would send vs sent): 4 shadow only, 3 both, 4 live only" in out
    assert "to=c5@example.com" in out

    listed = runner.invoke(app, ["--project", str(project), "report", "shadow"], env=terminal)
    assert listed.exit_code == 0 and f"shadow {SHADOW}" in listed.stdout

    piped = runner.invoke(app, ["--project", str(project), "report", "shadow", "--shadow", SHADOW,
                                "--live", LIVE], env={"TTY_COMPATIBLE": None, "FORCE_COLOR": None})
    numbers, samples = piped.stdout.rstrip("\n").split("\n\n")
    rows = [line.split("\t") for line in numbers.splitlines()]
    assert rows[0] == ["shadow_program", "live_program", "metric", "shadow", "live"]
    metrics = {r[2]: r[3:] for r in rows[1:]}
    assert metrics["decided shadow_only"][0] == "5" and metrics["messaged both"][0] == "3"
    assert metrics["status suppressed"] == ["3", metrics["status suppressed"][1]]
    assert samples.splitlines()[0].split("\t") == ["shadow_program", "delivery_id", "candidate_id",
                                                   "customer_id", "channel", "would_send"]
    assert "to=c5@example.com" in samples

    as_json = runner.invoke(app, ["--project", str(project), "report", "shadow", "--program", SHADOW,
                                  "--live", LIVE, "--json", "--samples", "1"])
    assert as_json.exit_code == 0, as_json.output
    [data] = json.loads(as_json.stdout)
    assert data["shadow"]["statuses"] == {"shadow": 7, "suppressed": 3}
    assert data["messaged"] == {"shadow_only": 4, "both": 3, "live_only": 4}
    assert len(data["samples"]) == 1 and data["since"].startswith("2026-11-25T12:00")

    bad = runner.invoke(app, ["--project", str(project), "report", "shadow", "--live", LIVE])
    assert bad.exit_code == 2 and "--live needs --shadow" in bad.stderr
    none = runner.invoke(app, ["--project", str(project), "report", "shadow", "--since", "1h"])
    assert none.exit_code == 0 and "no shadow decisions" in none.output

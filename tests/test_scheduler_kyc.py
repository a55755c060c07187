"""The shipped KYC reminder under the scheduler: daily runs start escalation chains, each
tick's dispatcher pass sends every step on its day, and mornings the scheduler missed are
made up as of their own day (catch_up: each), so those chains start too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from ceap.delivery.dispatcher import Dispatcher
from ceap.model import CandidateQuery
from ceap.plugin import PluginContext
from ceap.runtime.scheduler import Scheduler
from ceap.spec import load_program
from ceap.store import Store, open_store
from ceap.testing import CapturingChannel, FakeClock

PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "kyc_reminder.yaml"
D0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # Monday 06:00 UTC; the program runs at 07:00


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    yield s
    s.close()


def accounts(folder: Path, first_day: date) -> None:
    """K0..K3 reach "7 days before the deadline" on days 0..3."""
    (folder / "data").mkdir()
    rows = [{"customer_id": f"K{i}", "account_type": "personal", "kyc_status": "not_started",
             "kyc_deadline": first_day + timedelta(days=7 + i), "documents_missing": 2,
             "balance": 1500.0} for i in range(4)]
    pacsv.write_csv(pa.Table.from_pylist(rows), folder / "data" / "kyc_accounts.csv")


def sent(outbox: str) -> list[str]:
    return sorted(m.customer_id for m in CapturingChannel.outbox(outbox).messages)


def test_daily_runs_and_dispatch_carry_the_chain_and_make_up_missed_days(
        tmp_path: Path, store: Store) -> None:
    CapturingChannel.reset()
    accounts(tmp_path, D0.date())
    spec = load_program(PROGRAM)
    assert spec.schedule is not None and spec.schedule.catch_up == "each"
    clock = FakeClock(D0)
    channels = {name: CapturingChannel.from_dict({"type": "capture", "outbox": f"kyc-{name}"})
                for name in ("email", "sms", "inapp")}
    dispatcher = Dispatcher(store, channels, programs={spec.name: spec}, clock=clock)
    scheduler = Scheduler(store, PluginContext(base_dir=tmp_path), lambda: [spec], clock=clock,
                          dispatch=dispatcher.run, holder="S")

    def morning(day: int, hour: int = 7) -> list[str]:
        clock.now = D0.replace(hour=hour) + timedelta(days=day, seconds=5)
        return [f"{d.fire_at:%d %H:%M} {d.status}" for d in scheduler.tick().decisions]

    assert morning(0, hour=6) == []  # first sight
    assert morning(0) == ["02 07:00 succeeded"]
    assert (sent("kyc-email"), sent("kyc-sms")) == (["K0"], [])
    # the scheduler is down on the mornings of days 1 and 2, back in the evening of day 2
    assert morning(2, hour=18) == ["03 07:00 succeeded", "04 07:00 succeeded"]
    # K1's run is as of day 1: its e-mail expired (day 2, 07:00) before anyone could send it
    assert sent("kyc-email") == ["K0", "K2"]
    assert morning(3) == ["05 07:00 succeeded"]
    assert (sent("kyc-email"), sent("kyc-sms")) == (["K0", "K2", "K3"], ["K0"])  # K0's SMS: day 0 + 3
    for day in range(4, 10):
        morning(day)
    assert sent("kyc-sms") == ["K0", "K1", "K2", "K3"]
    assert sent("kyc-inapp") == ["K0", "K1", "K2", "K3"]  # K3's banner: day 3 + 6
    steps = store.candidates(CandidateQuery(program="kyc_reminder", limit=100, include_expired=True))
    assert len(steps) == 12 and not any(c.holdout for c in steps)  # 4 chains of 3, none twice
    expired = [(c.customer_id, c.channels) for c in steps if c.status == "expired"]
    assert expired == [("K1", ["email"])]
    runs = sorted(store.runs("default", "kyc_reminder", 100), key=lambda r: r.started_at)
    assert [r.started_at.day for r in runs] == list(range(2, 12))  # one run per morning, days 0..9

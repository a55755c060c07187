"""The demo's measured experiment (``discount_offer`` on simulated customers), on
SQLite and PostgreSQL: what it prints, what it leaves in the store, and that a second
demo the same day reports the same experiment without adding to it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from ceap.demo.simulated import PROGRAM, experiment_start, run_simulated_demo
from ceap.store import open_store

NOW = datetime(2026, 5, 4, 15, 30, tzinfo=UTC)


def test_demo_prints_the_uplift_of_simulated_outcomes(store_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEAP_SIGNING_SECRET", "a-signing-secret-for-tests-only")
    store = open_store(store_url)
    try:
        console = Console(record=True, width=160)
        first = run_simulated_demo(tmp_path, store, console, seed=3, now=NOW, customers=1_200)
        text = console.export_text()
        with store.tx() as tx:
            sources = dict(tx.execute("SELECT source, count(*) FROM engagements GROUP BY source").fetchall())
            conversions = tx.execute("SELECT count(*) FROM conversions WHERE program = ?",
                                     (PROGRAM,)).fetchone()[0]
            created = {r[0] for r in tx.execute("SELECT DISTINCT created_at FROM candidates").fetchall()}
        again = Console(record=True, width=160)
        second = run_simulated_demo(tmp_path, store, again, seed=3, now=NOW + timedelta(hours=2),
                                    customers=1_200)
    finally:
        store.close()
    report = first.report
    assert first.new_candidates == 1_200 and second.new_candidates == 0
    assert sum(a.customers for a in report.arms.values()) == 1_200
    assert set(report.arms) == {"treatment", "holdout"}
    assert [g.label for g in report.groups] == ["email_10", "inapp_15"]
    assert sum(a.converted for a in report.arms.values()) == conversions > 0
    # e-mail engagement came through the tracking and unsubscribe endpoints, in-app as events
    assert sources.get("pixel", 0) > 0 and sources.get("link", 0) > 0 and sources.get("event", 0) > 0
    assert len(created) == 1  # every candidate from the one run, at the experiment's start
    for line in ("discount_offer: uplift against the holdout", "all treated", "email_10 ",
                 "inapp_15 ", "e-mails (local SMTP server)", "conversions attributed"):
        assert line in text, line
    main = report.comparisons[0]
    assert main.absolute_ci is not None
    assert re.search(rf"all treated .* {re.escape(f'{main.absolute_uplift:+.2%}')} +"
                     rf"{re.escape(f'[{main.absolute_ci[0]:+.2%}, {main.absolute_ci[1]:+.2%}]')}", text)
    assert f"{first.truth['treatment vs holdout']:+.2%}" in text
    # the same day: nothing new, the same numbers
    assert [(c.treated.converted, c.control.converted, c.absolute_ci) for c in second.report.comparisons] \
        == [(c.treated.converted, c.control.converted, c.absolute_ci) for c in report.comparisons]
    assert "0 new candidates" in again.export_text()


def test_the_experiment_starts_twelve_days_before_the_demo_day() -> None:
    assert experiment_start(NOW) == datetime(2026, 4, 22, 10, 0, tzinfo=UTC)
    assert experiment_start(NOW.replace(hour=0, minute=1)) == experiment_start(NOW.replace(hour=23))

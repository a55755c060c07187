"""Real-time programs assign arms and variants like batch ones: the global control
group from the project, and the bandit's latest shares."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from scipy import stats

from ceap.experiments.assignment import in_global_control, in_holdout
from ceap.store import Store
from tests.test_realtime import Project

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def test_stream_candidates_get_global_control_and_bandit_shares(tmp_path: Path, store: Store) -> None:
    project = Project(tmp_path, store)
    project.context = replace(project.context, global_control=0.1)
    project.program("visit_offer", source={"type": "events", "on": ["visit"]},
                    action={"type": "offer", "channels": ["email"]},
                    experiment={"holdout": 0.2, "variants": [{"name": "a"}, {"name": "b"}],
                                "bandit": {"min_share": 0.05}},
                    goal={"event": "purchase", "within": "1d"})
    with store.tx() as tx:
        tx.executemany("INSERT INTO bandit_arms (tenant_id, program, variant, at, share, alpha, "
                       "beta, trials, successes) VALUES (?, ?, ?, ?, ?, 1, 1, 0, 0)",
                       [("default", "visit_offer", "a", tx.ts(T0), 0.9),
                        ("default", "visit_offer", "b", tx.ts(T0), 0.1)])
    for i in range(800):
        project.event(f"e{i}", f"u{i:04d}", "visit", i * 0.01)
    project.replay(batch=200)
    found = project.candidates("visit_offer")
    assert len(found) == 800
    for customer, c in found.items():
        expected = ("global_control" if in_global_control("default", customer, 0.1)
                    else "holdout" if in_holdout("default", "visit_offer", customer, 0.2)
                    else "treatment")
        assert c.arm == expected and c.holdout == (expected != "treatment")
    treated = [c for c in found.values() if c.arm == "treatment"]
    low, high = stats.binom.interval(0.999, len(treated), 0.9)
    assert low <= sum(c.variant == "a" for c in treated) <= high

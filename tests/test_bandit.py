"""Thompson sampling over variants: shares move toward the better arm and never below
the minimum share, count only outcomes whose window has closed, are stored over time,
drive the next assignment (control groups untouched), and are reported."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ceap.cli import app
from ceap.experiments.assignment import in_holdout
from ceap.experiments.bandit import SharesCache, bandit_history, latest_shares, thompson_shares, update_bandit
from ceap.model import RunRecord
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.spec import ProgramSpec, parse_program
from ceap.spec.experiment import Bandit
from ceap.spec.program import Goal
from ceap.store import Store
from ceap.testing import make_candidates
from tests.experiment_helpers import add_conversions, candidate_ids

NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
runner = CliRunner()


def with_goal(spec: ProgramSpec, within: timedelta) -> ProgramSpec:
    """``spec`` with a purchase ``goal`` of window ``within``."""
    return spec.model_copy(update={"goal": Goal(event=["purchase"], within=within)})


def test_shares_move_to_the_better_arm_and_keep_the_floor() -> None:
    bandit = Bandit(min_share=0.1)
    _, _, even = thompson_shares([0, 0], [0, 0], bandit)
    assert even == pytest.approx([0.5, 0.5], abs=0.01)  # no data: the prior, equal chances
    alpha, beta, shares = thompson_shares([1000, 1000, 1000], [40, 120, 60], bandit)
    assert list(alpha) == [41, 121, 61] and list(beta) == [961, 881, 941]
    assert shares == pytest.approx([0.1, 0.8, 0.1], abs=1e-9)  # b is surely best; the rest at the floor
    assert sum(shares) == pytest.approx(1.0)
    again = thompson_shares([1000, 1000, 1000], [40, 120, 60], bandit)[2]
    assert list(again) == list(shares)  # seeded: the same data gives the same shares
    close = thompson_shares([200, 200], [20, 24], bandit)[2]
    assert 0.1 < close[0] < close[1] < 0.9  # uncertain: both keep a real share
    rng = np.random.default_rng(1)
    for _ in range(50):  # never below the floor, whatever the data
        trials = rng.integers(0, 500, 4)
        shares = thompson_shares(trials, rng.binomial(trials, rng.random(4)), Bandit(min_share=0.05))[2]
        assert shares.min() >= 0.05 - 1e-12 and shares.sum() == pytest.approx(1.0)


def spec_with_bandit(**kw: Any) -> ProgramSpec:
    return parse_program({
        "name": "promo", "source": {"type": "parquet", "path": "customers.parquet"},
        "scorer": {"type": "expression", "expr": "1.0"},
        "action": {"type": "offer", "channels": ["email"], "expiry": "1h"},
        "experiment": {"holdout": 0.1, "variants": [{"name": "a"}, {"name": "b"}],
                       "bandit": {"min_share": 0.05}},
        "goal": {"event": "purchase", "within": "1d"}, **kw})


def _delivery(store: Store, candidate: Any, sent_at: datetime) -> None:
    with store.tx() as tx:
        tx.execute("INSERT INTO deliveries (tenant_id, candidate_id, program, customer_id, channel, "
                   "step, idempotency_key, status, next_attempt_at, category, created_at, "
                   "updated_at, sent_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   ("default", candidate.id, candidate.program, candidate.customer_id, "email", 0,
                    f"k{candidate.id}", "sent", tx.ts(sent_at), "marketing", tx.ts(sent_at),
                    tx.ts(sent_at), tx.ts(sent_at)))


def test_only_closed_windows_count(store: Store) -> None:
    within = timedelta(days=1)
    long_ago, recently = NOW - timedelta(days=3), NOW - timedelta(hours=2)
    rows = [  # (key, arm, variant, status, not_before, expires_at)
        ("sent_old", "treatment", "a", "sent", long_ago, NOW + timedelta(days=1)),
        ("sent_new", "treatment", "a", "sent", recently, NOW + timedelta(days=1)),
        ("pending", "treatment", "a", "pending", long_ago, NOW + timedelta(days=1)),
        ("expired", "treatment", "a", "pending", long_ago, NOW - timedelta(days=1)),
        ("suppressed", "treatment", "b", "suppressed", long_ago, NOW + timedelta(days=1)),
        ("converted", "treatment", "b", "sent", long_ago, NOW + timedelta(days=1)),
        ("held", "holdout", "b", "held_out", long_ago, NOW - timedelta(days=1)),
    ]
    table = make_candidates(len(rows), program="promo", dedup_key=lambda i: rows[i][0],
                            arm=lambda i: rows[i][1], holdout=lambda i: rows[i][1] != "treatment",
                            variant=lambda i: rows[i][2], status=lambda i: rows[i][3],
                            not_before=lambda i: rows[i][4], expires_at=lambda i: rows[i][5],
                            customer_id=lambda i: f"c{i}")
    store.write_run(RunRecord("r", "default", "promo", "succeeded", NOW), table)
    found = candidate_ids(store, "promo")
    for key, sent in (("sent_old", long_ago), ("sent_new", recently), ("converted", long_ago)):
        _delivery(store, found[key], sent)
    assert update_bandit(store, "default", spec_with_bandit(), NOW - timedelta(days=4), within) is None
    assert update_bandit(store, "default", spec_with_bandit(), NOW, within) is not None
    add_conversions(store, [("default", "promo", found["converted"].id, "c5", 10.0),
                            ("default", "promo", found["held"].id, "c6", 5.0)], NOW)
    states = {s.variant: s for s in update_bandit(store, "default", spec_with_bandit(),
                                                  NOW + timedelta(seconds=1), within)}
    # a: sent_old and expired (sent_new's window is open, pending may still be sent)
    # b: suppressed (never sent, final) and converted; the holdout is never a trial
    assert (states["a"].trials, states["a"].successes) == (2, 0)
    assert (states["b"].trials, states["b"].successes) == (2, 1)
    assert (states["b"].alpha, states["b"].beta) == (2.0, 2.0)
    history = bandit_history(store, "default", "promo")
    assert [(s.at, s.variant) for s in history] == [
        (NOW, "a"), (NOW, "b"), (NOW + timedelta(seconds=1), "a"), (NOW + timedelta(seconds=1), "b")]
    assert latest_shares(store, "default", "promo") == {s.variant: s.share for s in states.values()}


def test_runs_adapt_the_shares_and_leave_the_controls_alone(tmp_path: Path, store: Store) -> None:
    n, rates = 2000, {"a": 0.04, "b": 0.12}
    customers = [f"u{i:04d}" for i in range(n)]
    pq.write_table(pa.table({"customer_id": customers}), tmp_path / "customers.parquet")
    spec = with_goal(spec_with_bandit(), timedelta(hours=12))
    context = PluginContext(base_dir=tmp_path)
    rng = np.random.default_rng(5)
    shares_a, holdouts = [], []
    for day in range(4):
        now = NOW + timedelta(days=day)
        run_program(spec, store, context, now=now)
        made = [c for c in candidate_ids(store, "promo").values() if c.created_at == now]
        treated = [c for c in made if c.arm == "treatment"]
        holdouts.append({c.customer_id for c in made if c.arm == "holdout"})
        share_a = sum(c.variant == "a" for c in treated) / len(treated)
        shares_a.append(share_a)
        add_conversions(store, [("default", "promo", c.id, c.customer_id, 1.0) for c in made
                                if rng.random() < (rates[c.variant] if c.arm == "treatment" else 0.03)],
                        now + timedelta(hours=2))
    assert abs(shares_a[0] - 0.5) < 0.05  # before any outcome: the spec's weights
    # after the first day's outcomes, b is clearly better: a keeps its floor of 5%
    assert all(abs(s - 0.05) < 0.025 for s in shares_a[1:]), shares_a
    history = bandit_history(store, "default", "promo")
    assert len(history) == 3 * 2  # one update per run after the first outcomes, per variant
    assert all(s.share >= 0.05 - 1e-12 for s in history)
    assert [s.share for s in history if s.variant == "b"] == sorted(
        s.share for s in history if s.variant == "b")
    # the control group is drawn before the variants: the same customers every day
    assert all(h == holdouts[0] for h in holdouts)
    assert holdouts[0] == {c for c in customers if in_holdout("default", "promo", c, 0.1)}


def final_outcomes(store: Store, n: int = 4) -> None:
    """``n`` treated candidates of ``promo`` per variant, expired a day ago, none converted."""
    before = NOW - timedelta(days=1)
    table = make_candidates(2 * n, program="promo", variant=lambda i: "ab"[i % 2],
                            not_before=before, expires_at=before, customer_id=lambda i: f"f{i}",
                            dedup_key=lambda i: f"final-{i}")
    store.write_run(RunRecord("f", "default", "promo", "succeeded", before), table)


def test_the_stream_worker_rereads_shares_after_a_minute(store: Store) -> None:
    spec = spec_with_bandit()
    final_outcomes(store)
    cache = SharesCache()
    assert cache.get(store, "default", spec, NOW) is None
    update_bandit(store, "default", spec, NOW, timedelta(hours=1))
    assert cache.get(store, "default", spec, NOW + timedelta(seconds=30)) is None  # cached
    assert cache.get(store, "default", spec, NOW + timedelta(minutes=1)) == pytest.approx(
        {"a": 0.5, "b": 0.5}, abs=0.01)
    plain = parse_program({"name": "p", "source": {"type": "csv", "path": "x.csv"},
                           "action": {"type": "offer", "channels": ["email"]}})
    assert cache.get(store, "default", plain, NOW) is None


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CEAP_STORE", store_url)
    return tmp_path


PROMO_YAML = """\
name: promo
source: {type: parquet, path: customers.parquet}
action: {type: offer, channels: [email]}
experiment:
  variants: [{name: a}, {name: b}]
  bandit: {min_share: 0.05}
goal: {event: purchase, within: 1d}
"""


def test_report_bandit_prints_json_and_plots(project: Path, store: Store) -> None:
    unknown = runner.invoke(app, ["report", "bandit", "promo"])  # no file, no updates: a typo
    assert unknown.exit_code == 2
    assert "unknown program 'promo': no program file" in unknown.stderr
    (project / "programs").mkdir()
    (project / "programs" / "promo.yaml").write_text(PROMO_YAML)
    empty = runner.invoke(app, ["report", "bandit", "promo"])
    assert empty.exit_code == 0 and "no bandit updates for promo" in empty.stdout
    (project / "programs" / "plain.yaml").write_text(
        "source: {type: parquet, path: c.parquet}\naction: {type: offer, channels: [email]}\n")
    plain = runner.invoke(app, ["report", "bandit", "plain"])
    assert plain.exit_code == 0 and "plain has no experiment.bandit" in plain.stdout
    (project / "programs" / "promo.yaml").unlink()  # a removed program keeps its history
    final_outcomes(store)
    for hours in (0, 6):
        update_bandit(store, "default", spec_with_bandit(), NOW + timedelta(hours=hours),
                      timedelta(hours=1))
    result = runner.invoke(app, ["report", "bandit", "promo", "--json", "--plot",
                                 str(project / "shares.svg")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["variant"], r["trials"]) for r in rows] == [("a", 4), ("b", 4)] * 2
    assert rows[2]["at"] == (NOW + timedelta(hours=6)).isoformat()
    svg = (project / "shares.svg").read_text()
    assert svg.startswith("<svg") and "bandit shares over time" in svg
    text = runner.invoke(app, ["report", "bandit", "promo"])
    assert "posterior" in text.stdout and "Beta(1, 5)" in text.stdout


def test_experiments_update_and_the_report_call_the_attribution_when_installed(
        project: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    calls: list[tuple[list[str], datetime]] = []
    fake = types.ModuleType("ceap.outcomes.attribution")
    fake.attribute = lambda store, specs, now: calls.append(([s.name for s in specs], now))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ceap.outcomes.attribution", fake)
    (project / "programs").mkdir()
    (project / "programs" / "promo.yaml").write_text(json.dumps({
        "name": "promo", "source": {"type": "csv", "path": "x.csv"},
        "action": {"type": "offer", "channels": ["email"]},
        "experiment": {"variants": [{"name": "a"}, {"name": "b"}], "bandit": {}},
        "goal": {"event": "purchase", "within": "1d"}}))
    final_outcomes(store)
    update_bandit(store, "default", spec_with_bandit(), NOW, timedelta(hours=1))
    result = runner.invoke(app, ["experiments", "update", "promo", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    # no closed window with outcomes since the last update: selection keeps the latest shares
    assert row["weights"] == pytest.approx({"a": 0.5, "b": 0.5}, abs=0.01)
    assert [names for names, _ in calls] == [["promo"]]
    report = runner.invoke(app, ["report", "uplift", "promo", "--json"])
    assert report.exit_code == 0, report.output
    assert [names for names, _ in calls] == [["promo"], ["promo"]]

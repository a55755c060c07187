"""A micro-batch's stages in fewer DuckDB queries (rows, filters and score in one; best
rows and candidate rows in one) give what the stages one by one gave, and a program
with nothing new in a poll runs no query but still fires its due timers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from ceap.model import CandidateQuery
from ceap.pipeline.plan import Plan
from ceap.plugin import PluginContext
from ceap.realtime.engine import ProgramRunner
from ceap.realtime.source import Received
from ceap.realtime.worker import Worker
from ceap.scorers.expression import ExpressionScorer, ExpressionScorerConfig
from ceap.store import Store, open_store
from tests.test_realtime_eventtime import LATENESS, ListStream, _event, _message, _project

PROGRAM: dict[str, Any] = {
    "source": {"type": "events", "on": ["app_crash"], "lateness": f"{LATENESS}m",
               "columns": {"build": "int", "app": "string"}},
    "state": {"crashes": {"count": "app_crash", "window": "60m"}},
    "filters": [{"id": "repeated", "expr": "crashes >= 2"},
                {"id": "recent_build", "expr": "build > 100"}],
    "scorer": {"type": "expression", "expr": "least(1.0, crashes / 5.0)"},
    "selection": {"threshold": 0.5, "top_k": 2, "dedup_window": "30m"},
    "experiment": {"holdout": 0.3},
    "action": {"type": "alert", "channels": ["email"], "payload_columns": ["crashes", "build", "app"]},
}


def _crash(eid: str, customer: str, minute: int, build: Any) -> Received:
    event = _event(eid, customer, "app_crash", minute)
    event["attributes"] = {"build": build, "app": "ios" if minute % 2 else "web"}
    return _message(event, "")


def _polls() -> list[list[Received]]:
    """Crashes of eight customers over micro-batches: in and out of order, a duplicate,
    builds below the filter, one build that is not a number (quarantined)."""
    polls: list[list[Received]] = []
    n = 0
    for batch in range(6):
        poll = []
        for k in range(8):
            customer = f"C{(batch * 3 + k) % 8}"
            minute = batch * 7 + (k * 5) % 11
            build: Any = 90 + 7 * k if k != 5 or batch != 3 else "abc"
            poll.append(_crash(f"e{n}", customer, minute, build))
            n += 1
        if batch == 4:
            poll.append(poll[0])  # delivered twice in one poll
        polls.append(poll)
    return polls


#: a score relative to the micro-batch's rows: a window the one-query way would compute
#: over the quarantined rows too, so that stage runs on its own
WINDOWED = {**PROGRAM, "scorer": {"type": "expression",
                                  "expr": "least(1.0, crashes / 5.0 + min(build) OVER () / 10000)"}}


def _run(root: Path, store: Store, program: dict[str, Any]) -> Worker:
    context = _project(root, store, {"crashy": program})
    worker = Worker(store, ListStream(_polls()), root / "programs", context, batch=100)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    return worker


def _outcome(store: Store) -> tuple[list[tuple[Any, ...]], dict[str, Any], list[str]]:
    candidates = sorted(
        (c.customer_id, c.dedup_key, round(c.score, 9), json.dumps(c.payload, sort_keys=True), c.arm,
         c.status, c.holdout, c.created_at, c.not_before, c.expires_at)
        for c in store.candidates(CandidateQuery(limit=1000, include_expired=True)))
    run = store.runs("default", "crashy", limit=1)[0]
    funnel = {k: v for k, v in run.funnel.items() if k not in ("written", "already_present")}
    reasons = sorted(q["reason"] for q in store.quarantined("default", run.run_id))
    return candidates, funnel, reasons


@pytest.mark.parametrize(("program", "in_one"), [(PROGRAM, True), (WINDOWED, False)])
def test_one_query_stages_give_what_the_stages_one_by_one_gave(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, program: dict[str, Any], in_one: bool) -> None:
    scored: list[int] = []
    real = Plan.process_scored

    def spy(self: Plan, table: pa.Table, funnel: Any) -> Any:
        scored.append(table.num_rows)
        return real(self, table, funnel)

    monkeypatch.setattr(Plan, "process_scored", spy)
    fused_store = open_store(f"sqlite:///{tmp_path}/fused.db")
    _run(tmp_path / "fused", fused_store, program)
    assert bool(scored) == in_one, "the micro-batches after the first took the one-query way"

    scored.clear()
    monkeypatch.setattr(Plan, "scored_sql", lambda *a, **k: None)         # filters, score: one by one
    monkeypatch.setattr("ceap.pipeline.selection._explains", lambda *a: True)  # best rows, then candidates
    plain_store = open_store(f"sqlite:///{tmp_path}/plain.db")
    _run(tmp_path / "plain", plain_store, program)
    assert not scored
    try:
        fused, plain = _outcome(fused_store), _outcome(plain_store)
        assert fused == plain
        candidates, funnel, reasons = fused
        assert candidates  # the comparison is not of nothing
        assert funnel["quarantined"] == 1 and reasons == ["column build: not a valid int"]
        assert funnel["filters"]["repeated"] > 0 and funnel["filters"]["recent_build"] > 0
        assert funnel["below_threshold"] > 0 and funnel["over_top_k"] > 0
    finally:
        fused_store.close()
        plain_store.close()


def test_a_program_with_nothing_new_runs_no_query_and_its_due_timers_still_fire(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll of page views only: the crash program (nothing fresh, no timer) makes no
    rows; the cart program, whose timer the poll's watermark makes due, makes its row."""
    ran: list[str] = []
    real = ProgramRunner._fused_rows

    def spy(self: ProgramRunner, combined: pa.Table, now: Any) -> Any:
        ran.append(self.spec.name)
        return real(self, combined, now)

    monkeypatch.setattr(ProgramRunner, "_fused_rows", spy)
    programs = {
        "crashy": PROGRAM,
        "cart": {"source": {"type": "events", "on": [], "lateness": f"{LATENESS}m"},
                 "state": {"no_order": {"absence": {"after": "cart_updated", "missing": "order_placed"},
                                        "within": "20m"}},
                 "filters": [{"id": "abandoned", "expr": "no_order"}],
                 "action": {"type": "offer", "channels": ["email"]}},
    }
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    polls = [[_crash("x1", "A", 0, 200), _message(_event("c1", "B", "cart_updated", 0), "")],
             [_message(_event("v1", "Z", "page_view", 30), "")],
             [_message(_event("v2", "Z", "page_view", 20 + LATENESS + 1), "")]]
    worker = Worker(store, ListStream(polls), tmp_path / "programs", _project(tmp_path, store, programs))
    try:
        worker.run(until_idle=True)
        found = sorted((c.program, c.customer_id)
                       for c in store.candidates(CandidateQuery(limit=100, include_expired=True)))
    finally:
        worker.close()
        store.close()
    # first poll: both programs have fresh events; second: neither has anything new;
    # third: only the cart program, whose timer is due
    assert ran == ["crashy", "cart", "cart"] or ran == ["cart", "crashy", "cart"]
    assert found == [("cart", "B")]


def test_the_expression_scorers_sql_gives_its_scores() -> None:
    scorer = ExpressionScorer(ExpressionScorerConfig(type="expression", expr="x * 2 + y"),
                              PluginContext(base_dir=Path(".")))
    table = pa.table({"x": [1.0, None, 3.0], "y": [1, 2, 3]})
    con = duckdb.connect()
    con.register("t", table)
    sql = scorer.sql()
    assert sql is not None
    via_sql = con.sql(f"SELECT {sql} AS s FROM t").to_arrow_table().column("s").to_pylist()
    assert via_sql == [3.0, None, 9.0]
    assert list(scorer.score(table))[::2] == [3.0, 9.0]
    weights = ExpressionScorer(ExpressionScorerConfig(type="expression", weights={"x": 1.0}))
    assert weights.sql() is None

"""``action.channels_if``: a channel kept only on the rows where a boolean column is true (use
case 7: the retention e-mail for every selected customer, and a call task for the account
manager only for the high-value ones), in batch runs and stream micro-batches, and the errors
of a condition that cannot hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ceap.errors import SourceError, SpecError
from ceap.model import CandidateQuery
from ceap.pipeline.funnel import Funnel
from ceap.pipeline.plan import SCORE
from ceap.pipeline.selection import RunInfo, select
from ceap.plugin import PluginContext
from ceap.runtime import run_program
from ceap.spec import parse_program
from ceap.sqlexpr import sandboxed_connection
from ceap.store import open_store
from tests.helpers import write_csv


def _program(**action: Any) -> dict[str, Any]:
    return {
        "name": "churn",
        "source": {"type": "csv", "path": "engagement.csv", "columns": {"lifetime_value": "float"}},
        "features": {"high_value": "lifetime_value >= 1000"},
        "filters": [{"id": "declining", "expr": "sessions_last_30d < sessions_prev_30d / 2"}],
        "action": {"type": "offer", "channels": ["email", "account_manager"], "deliver": "all",
                   "channels_if": {"account_manager": "high_value"}, **action},
    }


def test_only_high_value_customers_get_the_account_manager_channel(tmp_path: Path,
                                                                    context: PluginContext) -> None:
    write_csv(tmp_path / "engagement.csv", "customer_id,sessions_prev_30d,sessions_last_30d,lifetime_value", [
        "a1,20,2,5000",   # high value: the e-mail and the call task
        "a2,20,3,200",    # the e-mail only
        "a3,20,1,",       # lifetime value unknown: null counts as false, the e-mail only
        "a4,20,19,9000",  # not declining: nothing
    ])
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    now = datetime.now(UTC)
    run_program(parse_program(_program()), store, context, now=now)
    got = {c.customer_id: c.channels
           for c in store.candidates(CandidateQuery(limit=100, include_expired=True))}
    assert got == {"a1": ["email", "account_manager"], "a2": ["email"], "a3": ["email"]}


def test_a_missing_condition_column_fails_the_run_naming_the_field(tmp_path: Path,
                                                                   context: PluginContext) -> None:
    write_csv(tmp_path / "engagement.csv", "customer_id,sessions_prev_30d,sessions_last_30d,lifetime_value",
              ["a1,20,2,5000"])
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    spec = parse_program(_program(channels_if={"account_manager": "vip"}))
    with pytest.raises(SourceError, match=r"action\.channels_if: unknown column 'vip'"):
        run_program(spec, store, context, now=datetime.now(UTC))


@pytest.mark.parametrize(("channels_if", "message"), [
    ({"sms": "high_value"}, "'sms' is not in action.channels"),
    ({"account_manager": "high value"}, "is not a column name"),
    ({"account_manager": "high_value", "email": "high_value"}, "at least one channel must have no condition"),
])
def test_conditions_that_cannot_hold_are_spec_errors(channels_if: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        parse_program(_program(channels_if=channels_if))
    assert "action.channels_if" in str(caught.value)


def test_a_stream_micro_batch_keeps_the_channel_where_the_column_is_true() -> None:
    spec = parse_program({"name": "p", "source": {"type": "events", "on": ["x"]},
                          "action": {"type": "alert", "channels": ["inapp", "sms"], "deliver": "all",
                                     "channels_if": {"sms": "urgent"}}})
    t0 = datetime.now(UTC).replace(tzinfo=None)
    best = pa.table({"customer_id": ["c1", "c2", "c3"], "event_id": ["e1", "e2", "e3"],
                     "event_ts": [t0, t0 + timedelta(seconds=1), t0 + timedelta(seconds=2)],
                     "urgent": [True, False, None], SCORE: [1.0, 1.0, 1.0]})
    con = sandboxed_connection()
    info = RunInfo("default", "run-1", datetime.now(UTC), "m1", global_control=0.0)
    rows = select(con, best, spec, info, Funnel(), None, event_time="event_ts").to_pylist()
    con.close()
    assert {r["customer_id"]: r["channels"] for r in rows} == {
        "c1": '["inapp", "sms"]', "c2": '["inapp"]', "c3": '["inapp"]'}


def test_a_journey_program_refuses_it() -> None:
    spec = _program()
    spec["journey"] = {"steps": [{"id": "offer", "send": {}}]}
    with pytest.raises(SpecError, match="action.channels_if: a journey's send steps name their own channels"):
        parse_program(spec)

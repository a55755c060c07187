"""Goal events: the program's ``goal``, recording from the real-time worker (HTTP
ingest, streams, ``ceap publish``), and imports from files; replays store nothing twice."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ceap.api import create_app
from ceap.cli import app
from ceap.errors import SpecError
from ceap.outcomes.goals import goal_types, import_goal_file
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedStream
from ceap.realtime.worker import Worker
from ceap.spec import parse_program
from ceap.store import Store, open_store
from tests.helpers import base_program, write_program
from tests.outcome_helpers import rows

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Any:
    s = open_store(store_url)
    yield s
    s.close()


def program_with_goal(name: str = "big_carts", **goal: Any) -> dict[str, Any]:
    return base_program(name=name, goal={"event": "purchase", "within": "7d", "value": "amount", **goal})


def test_the_goal_is_part_of_the_program_spec() -> None:
    spec = parse_program(program_with_goal(event=["purchase", "subscription_started"]))
    assert spec.goal is not None and spec.goal.event == ["purchase", "subscription_started"]
    assert spec.goal.within.days == 7 and spec.goal.value == "amount"
    assert parse_program(base_program()).goal is None
    for bad, where in (({"within": "0s"}, "goal.within"), ({"event": []}, "goal.event"),
                       ({"event": "has space"}, "goal.event"), ({"value": "a.b"}, "goal.value"),
                       ({"window": "7d"}, "goal.window")):
        with pytest.raises(SpecError) as exc:
            parse_program(program_with_goal(**bad), "p.yaml")
        assert any(where in line for line in exc.value.lines()), exc.value.lines()


def test_goal_types_take_one_value_attribute_per_event_type() -> None:
    specs = [parse_program(program_with_goal("b", value="revenue")),
             parse_program(program_with_goal("a", event=["purchase", "signup"], value=None)),
             parse_program(base_program(name="c"))]
    assert goal_types(specs) == {"purchase": "revenue", "signup": None}


def event(eid: str, etype: str, customer: str | None, **attributes: Any) -> dict[str, Any]:
    return {"id": eid, "type": etype, "ts": "2026-05-01T10:00:00Z", "customer_id": customer,
            "attributes": attributes}


def goal_events(store: Store) -> list[tuple[Any, ...]]:
    return rows(store, "SELECT tenant_id, event_id, customer_id, type, value FROM goal_events "
                       "ORDER BY event_id")


def test_the_worker_keeps_goal_events_from_http_ingest_once(store: Store, tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "big_carts.yaml", program_with_goal())
    context = PluginContext(base_dir=tmp_path, store=store)
    stream = EmbeddedStream.from_dict({"type": "embedded", "stream": "ingest"}, context)
    api = TestClient(create_app(store, auth=False, ingest=stream))
    batch = [event("p1", "purchase", "c1", amount=19.5), event("p2", "purchase", "c2", amount="12"),
             event("p3", "purchase", "c3", amount="lots"), event("p4", "purchase", "c4"),
             event("v1", "page_view", "c1"), event("p5", "purchase", None, amount=1)]
    assert api.post("/v1/events", json=batch).json()["accepted"] == 6
    envelope = {"id": "eb1", "detail-type": "purchase", "source": "shop", "time": "2026-05-01T11:00:00Z",
                "detail": {"customer_id": "c5", "amount": 7}}
    assert api.post("/v1/events/eventbridge", json=envelope).json()["accepted"] == 1
    assert api.post("/v1/events", json=batch[:2]).json()["accepted"] == 2  # sent again
    Worker(store, stream, tmp_path / "programs", context, batch=3).run(until_idle=True)
    assert goal_events(store) == [("default", "eb1", "c5", "purchase", 7.0),
                                  ("default", "p1", "c1", "purchase", 19.5),
                                  ("default", "p2", "c2", "purchase", 12.0),
                                  ("default", "p3", "c3", "purchase", None),   # not a number
                                  ("default", "p4", "c4", "purchase", None)]   # no amount
    assert stream.lag() == 0


def test_a_goal_added_to_a_program_applies_to_the_next_micro_batch(store: Store, tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    path = write_program(tmp_path / "programs" / "big_carts.yaml", base_program())
    context = PluginContext(base_dir=tmp_path, store=store)
    stream = EmbeddedStream.from_dict({"type": "embedded", "stream": "live"}, context)
    stream.publish([json.dumps(event("s1", "signup", "c1")).encode()])
    Worker(store, stream, tmp_path / "programs", context).run(until_idle=True)
    assert goal_events(store) == []
    write_program(path, program_with_goal(event="signup", value=None))
    os.utime(path, (1_900_000_000, 1_900_000_000))  # a new mtime even within the same second
    stream.publish([json.dumps(event("s2", "signup", "c2")).encode()])
    Worker(store, stream, tmp_path / "programs", context).run(until_idle=True)
    assert goal_events(store) == [("default", "s2", "c2", "signup", None)]


def test_publish_then_worker_records_goal_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "big_carts.yaml", program_with_goal())
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(event(f"p{i}", "purchase", f"c{i}", amount=i))
                                                     for i in range(5)))
    runner = CliRunner()
    assert runner.invoke(app, ["publish", "events.jsonl"]).exit_code == 0
    assert runner.invoke(app, ["worker", "--until-idle"]).exit_code == 0
    assert runner.invoke(app, ["publish", "events.jsonl"]).exit_code == 0   # a replay
    assert runner.invoke(app, ["worker", "--until-idle"]).exit_code == 0
    store = open_store(f"sqlite:///{tmp_path / '.ceap' / 'ceap.db'}")
    assert [r[1:] for r in goal_events(store)] == [(f"p{i}", f"c{i}", "purchase", float(i)) for i in range(5)]


# -- imports from files ------------------------------------------------------------------


def test_importing_a_csv_rejects_bad_rows_by_number_and_replays_add_nothing(store: Store, tmp_path: Path
                                                                           ) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("event_id,customer_id,type,ts,revenue\n"
                    "o1,c1,purchase,2026-05-01T10:00:00Z,10.5\n"
                    "o2,c2,purchase,2026-05-01 11:00:00,\n"           # no offset: UTC; no value
                    ",c3,purchase,2026-05-01T10:00:00Z,1\n"           # no id
                    "o4,c4,purchase,yesterday,1\n"                    # not a time
                    "o5,c5,purchase,2026-05-01T12:00:00+02:00,abc\n"  # not a number
                    "o6,,purchase,2026-05-01T10:00:00Z,1\n")          # no customer
    result = import_goal_file(store, path, "default", value="revenue", now=T0)
    assert (result.read, result.inserted, result.duplicates) == (6, 2, 0)
    assert result.rejected == [(3, "event_id: missing"), (4, "ts: missing or not a time"),
                               (5, "value: not a number"), (6, "customer_id: missing")]
    assert goal_events(store) == [("default", "o1", "c1", "purchase", 10.5),
                                  ("default", "o2", "c2", "purchase", None)]
    [(ts,)] = rows(store, "SELECT ts FROM goal_events WHERE event_id = 'o2'")
    assert str(ts).startswith("2026-05-01") and ("11:00:00" in str(ts))
    again = import_goal_file(store, path, "default", value="revenue", now=T0)
    assert (again.inserted, again.duplicates) == (0, 2)


def test_parquet_and_json_lines_imports_and_a_type_for_every_row(store: Store, tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": ["a1", "a2"], "customer_id": ["c1", "c2"],
                             "ts": pa.array([T0, T0], pa.timestamp("us", "UTC")), "value": [1.0, 2.0]}),
                   tmp_path / "subs.parquet")
    result = import_goal_file(store, tmp_path / "subs.parquet", "acme", event_type="subscription_started")
    assert (result.inserted, result.rejected) == (2, [])
    line = {"event_id": "j1", "customer_id": "c3", "type": "purchase", "ts": "2026-05-01T10:00:00Z"}
    (tmp_path / "more.jsonl").write_text(json.dumps(line) + "\n")
    assert import_goal_file(store, tmp_path / "more.jsonl", "acme").inserted == 1
    assert goal_events(store) == [("acme", "a1", "c1", "subscription_started", 1.0),
                                  ("acme", "a2", "c2", "subscription_started", 2.0),
                                  ("acme", "j1", "c3", "purchase", None)]
    with pytest.raises(ValueError, match="missing column"):
        import_goal_file(store, tmp_path / "subs.parquet", "acme")   # no type column, no --type
    with pytest.raises(ValueError, match="expected a .csv"):
        import_goal_file(store, tmp_path / "subs.txt", "acme")


def test_the_import_command_reports_and_exits_non_zero_on_rejections(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    (tmp_path / "ok.csv").write_text("event_id,customer_id,ts\ne1,c1,2026-05-01T10:00:00Z\n")
    (tmp_path / "bad.csv").write_text("event_id,customer_id,ts\ne2,c1,never\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["outcomes", "import", "ok.csv", "--type", "purchase", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"read": 1, "inserted": 1, "already_present": 0, "rejected": 0,
                                     "deleted_customers": 0}
    bad = runner.invoke(app, ["outcomes", "import", "bad.csv", "--type", "purchase"])
    assert bad.exit_code == 1 and "bad.csv: row 1: ts: missing or not a time" in bad.output
    assert runner.invoke(app, ["outcomes", "import", "nope.csv"]).exit_code == 2
    missing = runner.invoke(app, ["outcomes", "import", "ok.csv"])
    assert missing.exit_code == 2 and "missing column(s) type" in missing.output

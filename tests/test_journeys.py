"""Journeys: the spec's checks (``file: field: message``), the walk on a fake clock, a
change of steps under customers already inside, the graph, and ``ceap journey``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ceap.cli import app
from ceap.errors import SpecError
from ceap.journeys.engine import tick
from ceap.journeys.plot import render
from ceap.journeys.state import customer_entries
from ceap.model import RunRecord
from ceap.spec import load_program
from ceap.store import Store, open_store
from ceap.store.schema import loads
from ceap.testing import FakeClock, make_candidates
from tests.journey_helpers import T0, events_program


def write(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def problems(tmp_path: Path, journey: dict[str, Any], **extra: Any) -> list[str]:
    path = write(tmp_path, events_program("j", "signed_up", journey, **extra))
    with pytest.raises(SpecError) as caught:
        load_program(path)
    return caught.value.lines()


STEPS = [{"id": "a", "send": {}}, {"id": "w", "wait_for": {"within": "1d"}}]


@pytest.mark.parametrize(("journey", "expected"), [
    ({"steps": [{"id": "a", "send": {}, "next": "smss"}, {"id": "sms", "send": {}}]},
     "journey.steps[0].next: unknown step 'smss' (did you mean 'sms'?); name a step id or 'end'"),
    ({"steps": [{"id": "a", "send": {}, "next": "end"}, {"id": "b", "send": {}}]},
     "journey.steps[1]: step 'b' is unreachable from the first step 'a'"),
    ({"steps": [{"id": "a", "send": {}, "next": "b"},
                {"id": "b", "branch": {"if": "score > 1", "then": "a"}}]},
     "journey.steps: the cycle a -> b -> a passes no wait_for step; add one (a customer would go round "
     "it without end)"),
    ({"steps": [{"id": "a", "send": {}}, {"id": "a", "send": {}}]},
     "journey.steps[1].id: step id 'a' is used twice"),
    ({"steps": [{"id": "a", "send": {}, "wait_for": {"within": "1d"}}]},
     "journey.steps[0]: give exactly one of send, wait_for, branch, exit"),
    ({"steps": [{"id": "w", "wait_for": {"events": ["bad type!"], "within": "1d"}}]},
     "journey.steps[0].wait_for.events: 'bad type!' is not an event type (letters, digits, _ . : -)"),
    ({"steps": [{"id": "w", "wait_for": {"within": "1d", "timout": "end"}}]},
     "journey.steps[0].wait_for.timout: unknown field (did you mean 'timeout'?)"),
    ({"steps": [{"id": "b", "branch": {"if": "score >", "then": "end"}}]},
     "journey.steps[0].branch.if: invalid SQL expression"),
    ({"steps": STEPS, "reentry": "sometimes"}, "journey.reentry"),
])
def test_bad_journeys_are_named_by_file_and_field(tmp_path: Path, journey: dict[str, Any],
                                                  expected: str) -> None:
    lines = problems(tmp_path, journey)
    assert any(line.startswith(f"{tmp_path / 'j.yaml'}: {expected}") for line in lines), lines


def test_journey_programs_time_messages_with_steps_not_escalation(tmp_path: Path) -> None:
    lines = problems(tmp_path, {"steps": STEPS},
                     action={"escalation": [{"after": "1d", "channels": ["sms"]}]})
    assert lines == [f"{tmp_path / 'j.yaml'}: action.escalation: a journey program times its messages "
                     "with its steps (send, wait_for, exit_on); remove action.escalation"]


def test_a_cycle_through_a_wait_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, events_program("j", "signed_up", {"steps": [
        {"id": "a", "send": {}}, {"id": "w", "wait_for": {"events": ["clicked"], "within": "1d",
                                                          "timeout": "a"}}]}))
    assert load_program(path).journey is not None


# -- the walk, on a store, without the worker or the dispatcher ---------------------------
def batch_program(folder: Path, steps: list[dict[str, Any]], **journey: Any) -> Path:
    return write(folder, {"name": "series", "source": {"type": "csv", "path": "x.csv"},
                          "action": {"type": "inform", "channels": ["email"]},
                          "journey": {"steps": steps, **journey}})


def enter(store: Store, customers: list[str]) -> None:
    """Tickets as a journey program's run writes them (status ``journey``)."""
    store.write_run(RunRecord("r1", "default", "series", "succeeded", T0), _tickets(customers, "t"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'j.db'}")


SERIES = [
    {"id": "first", "send": {"payload": {"n": 1}}},
    {"id": "pause", "wait_for": {"within": "1d"}},
    {"id": "second", "send": {"payload": {"n": 2}}},
    {"id": "pause2", "wait_for": {"within": "1d"}},
    {"id": "third", "send": {"payload": {"n": 3}}},
]


def messages(store: Store) -> list[tuple[str, int]]:
    with store.tx() as tx:
        rows = tx.execute("SELECT customer_id, payload FROM candidates "
                          "WHERE substr(dedup_key, 1, 8) = 'journey:' ORDER BY id").fetchall()
    return [(c, loads(p)["n"]) for c, p in rows]


def test_a_change_of_steps_moves_customers_by_step_id(tmp_path: Path, store: Store) -> None:
    """The rule (docs/journeys.md): an entry keeps its current step id and follows the
    program as it is now; an entry whose step was removed exits, naming the step."""
    clock = FakeClock(T0)
    path = batch_program(tmp_path, SERIES)
    enter(store, ["c1", "c2"])
    tick(store, [load_program(path)], now=clock())
    with store.tx() as tx:  # c2 is moved on to the second pause by an earlier version
        tx.execute("UPDATE journey_entries SET step = 'pause2' WHERE customer_id = 'c2'")
    # the new version: a different second message, the second pause removed
    new = [SERIES[0], SERIES[1], {"id": "second", "send": {"payload": {"n": 20}}, "next": "third"},
           SERIES[4]]
    batch_program(tmp_path, new)
    spec = load_program(path)
    clock.advance(days=1, seconds=1)
    stats = tick(store, [spec], now=clock())
    assert (stats.moved, stats.exited) == (2, 1)
    assert messages(store) == [("c1", 1), ("c2", 1), ("c1", 20), ("c1", 3)]
    with store.tx() as tx:
        [c1] = customer_entries(tx, "default", "c1", "series")
        [c2] = customer_entries(tx, "default", "c2", "series")
    assert (c1.status, c1.version != spec.journey.version()) == ("completed", True)
    assert (c2.status, c2.reason) == ("exited", "step 'pause2' is no longer in the journey")


def test_one_message_per_step_when_two_ticks_race(tmp_path: Path, sqlite_store: Store) -> None:
    """A tick that read an entry before another tick moved it writes nothing for it."""
    store = sqlite_store
    spec = load_program(batch_program(tmp_path, SERIES))
    enter(store, ["c1"])
    enter_only = tick(store, [], now=T0)
    assert enter_only.entered == 0  # no spec given: nothing happens
    from ceap.journeys.engine import enter as enter_tickets
    from ceap.journeys.engine import walk, write_walk
    from ceap.journeys.state import active_entries

    enter_tickets(store, spec, T0)
    with store.tx() as tx:
        [stale] = active_entries(tx, "series")
    first = tick(store, [spec], now=T0)
    late = walk(stale, spec.journey, T0, [], {})
    with store.tx() as tx:
        assert write_walk(tx, spec, stale, late, T0) is False
    assert first.messages == 1 and messages(store) == [("c1", 1)]


def test_a_chunk_written_in_batch_skips_the_entries_another_tick_moved(tmp_path: Path,
                                                                       store: Store) -> None:
    """``write_walks`` (the batched chunk write) moves each entry only if nobody moved it
    since it was read, and writes messages and log rows for those it moved only."""
    from ceap.journeys.engine import enter as enter_tickets
    from ceap.journeys.engine import walk, write_walks
    from ceap.journeys.state import active_entries

    spec = load_program(batch_program(tmp_path, SERIES))
    enter(store, ["c1", "c2", "c3"])
    enter_tickets(store, spec, T0)
    with store.tx() as tx:
        stale = active_entries(tx, "series")
    with store.tx() as tx:  # another tick moved c2 meanwhile
        tx.execute("UPDATE journey_entries SET seq = seq + 5 WHERE customer_id = 'c2'")
    chunk = [(e, walk(e, spec.journey, T0, [], {})) for e in stale]
    with store.tx() as tx:
        moved = write_walks(tx, spec, chunk, T0)
    assert sorted(e.customer_id for e in stale if e.id in moved) == ["c1", "c3"]
    assert sorted(messages(store)) == [("c1", 1), ("c3", 1)]
    with store.tx() as tx:
        entries = {c: customer_entries(tx, "default", c, "series")[0] for c in ("c1", "c2", "c3")}
    assert {c: (e.step, [m["what"] for m in e.log]) for c, e in entries.items()} == {
        "c1": ("pause", ["entered", "sent"]), "c2": ("first", ["entered"]),
        "c3": ("pause", ["entered", "sent"])}
    sent = entries["c1"].log[1]
    assert sent["candidate_id"] is not None and entries["c1"].step_since == T0
    # the same chunk again (a tick that read it before this one wrote): nothing more
    with store.tx() as tx:
        assert write_walks(tx, spec, chunk, T0) == set()
    assert len(messages(store)) == 2


def test_reentry_after_a_duration(tmp_path: Path, store: Store) -> None:
    spec = load_program(batch_program(tmp_path, [{"id": "only", "send": {"payload": {"n": 1}}}],
                                      reentry="30d"))
    enter(store, ["c1"])
    assert tick(store, [spec], now=T0).completed == 1
    store.write_run(RunRecord("r2", "default", "series", "succeeded", T0),
                    _tickets(["c1"], "again-1"))
    assert tick(store, [spec], now=T0 + timedelta(days=29)).refused == 1
    store.write_run(RunRecord("r3", "default", "series", "succeeded", T0),
                    _tickets(["c1"], "again-2"))
    assert tick(store, [spec], now=T0 + timedelta(days=31)).entered == 1
    assert len(messages(store)) == 2


def _tickets(customers: list[str], key: str) -> Any:
    return make_candidates(len(customers), now=T0, program="series", status="journey",
                           customer_id=lambda i: customers[i], dedup_key=lambda i: f"{key}:{customers[i]}",
                           payload={})


# -- the graph and the CLI -----------------------------------------------------------------
def test_plot_formats(tmp_path: Path) -> None:
    spec = load_program(write(tmp_path, events_program("j", "signed_up", {"exit_on": ["purchase"], "steps": [
        {"id": "email", "send": {}},
        {"id": "wait", "wait_for": {"events": {"opened": "end"}, "within": "24h", "timeout": "sms"}},
        {"id": "sms", "send": {"channels": ["sms"]}}]})))
    mermaid = render(spec.journey, "mermaid", spec.action)
    assert "wait -->|opened| done" in mermaid and "wait -->|timeout| sms" in mermaid
    assert 'email["email: send email"]' in mermaid
    dot = render(spec.journey, "dot", spec.action)
    assert dot.startswith("digraph journey {") and 'wait -> sms [label="timeout"];' in dot
    text = render(spec.journey, "text", spec.action)
    assert "wait: wait 1d for opened" in text and "any step: exit on purchase" in text


def test_cli_plot_customer_and_tick(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    batch_program(tmp_path / "programs", SERIES)
    store_url = f"sqlite:///{tmp_path / 'cli.db'}"
    store = open_store(store_url)
    enter(store, ["c1"])
    store.close()
    runner = CliRunner()
    base = ["--project", str(tmp_path), "--store", store_url]
    plot = runner.invoke(app, [*base, "journey", "series", "--plot", "--format", "text"])
    assert plot.exit_code == 0 and "pause: wait 1d for nothing (a delay)" in plot.output
    bad = runner.invoke(app, [*base, "journey", "series", "--plot", "--format", "gif"])
    assert bad.exit_code == 2
    ticked = runner.invoke(app, [*base, "journeys", "tick", "--json"])
    assert ticked.exit_code == 0, ticked.output
    assert json.loads(ticked.stdout) | {} == {"entered": 1, "refused": 0, "messages": 1, "moved": 1,
                                              "completed": 0, "exited": 0, "waiting": 1, "conflicts": 0}
    shown = runner.invoke(app, [*base, "journey", "series", "--customer", "c1", "--json"])
    [entry] = json.loads(shown.stdout)
    assert (entry["status"], entry["step"]) == ("active", "pause")
    assert [h["what"] for h in entry["history"]] == ["entered", "sent"]
    lines = runner.invoke(app, [*base, "journey", "series", "--customer", "c1"]).stdout.splitlines()
    assert lines[0] == "entry\tseq\tstep\twhat\tmessage\tat"  # tab-separated when piped
    moves = [line.split("\t")[1:4] for line in lines[1:]]
    assert moves == [["0", "first", "entered"], ["1", "first", "sent"]]
    nobody = runner.invoke(app, [*base, "journey", "series", "--customer", "nobody"])
    assert nobody.exit_code == 0 and "nobody has not entered series" in nobody.stderr
    counts = runner.invoke(app, [*base, "journey", "series", "--json"])
    assert json.loads(counts.stdout) == [{"status": "active", "step": "pause", "entries": 1}]


def test_the_api_shows_a_customers_place(tmp_path: Path, sqlite_store: Store) -> None:
    from fastapi.testclient import TestClient

    from ceap.api import create_app

    spec = load_program(batch_program(tmp_path, SERIES))
    enter(sqlite_store, ["c1"])
    tick(sqlite_store, [spec], now=T0)
    client = TestClient(create_app(sqlite_store, auth=False))
    [entry] = client.get("/v1/customers/c1/journeys", params={"program": "series"}).json()
    assert (entry["status"], entry["step"], entry["step_since"]) == ("active", "pause", T0.isoformat())
    assert [(h["seq"], h["what"]) for h in entry["history"]] == [(0, "entered"), (1, "sent")]
    assert entry["history"][1]["candidate_id"] is not None
    assert client.get("/v1/customers/nobody/journeys").json() == []
    assert client.get("/v1/customers/c1/journeys", params={"limit": 0}).status_code == 422


def test_validate_checks_the_templates_of_send_steps(tmp_path: Path) -> None:
    (tmp_path / "programs").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hello.yaml").write_text(
        "inapp:\n  title: Hello\n  body: 'Hello {{ payload.n }}'\n")
    write(tmp_path / "programs", {
        "name": "series", "source": {"type": "csv", "path": "x.csv"},
        "action": {"type": "inform", "channels": ["inapp"], "template": "hello", "category": "transactional",
                   "payload": {"n": 1}},
        "journey": {"steps": [{"id": "first", "send": {}},
                              {"id": "wait", "wait_for": {"within": "1d"}},
                              {"id": "sms", "send": {"channels": ["sms"]}},
                              {"id": "other", "send": {"template": "missing"}}]}})
    result = CliRunner().invoke(app, ["--project", str(tmp_path), "validate", "series"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert any(": journey.steps[2].send.template: " in line and "sms" in line for line in lines), lines
    assert any(": journey.steps[3].send.template: template 'missing' not found" in line for line in lines)
    assert not any(": action.template" in line for line in lines)


def test_branches_read_score_context_and_payload(tmp_path: Path) -> None:
    from ceap.journeys.branches import branch_results
    from ceap.journeys.state import Entry

    spec = load_program(batch_program(tmp_path, [
        {"id": "vip", "branch": {"if": "score >= 0.8 AND plan = 'pro'"}},
        {"id": "mixed", "branch": {"if": "code = '7'"}},
        {"id": "missing", "branch": {"if": "nothing_like_it > 1", "then": "end", "else": "end"}}]))

    def entry(i: int, score: float | None, context: dict[str, Any], payload: dict[str, Any]) -> Entry:
        return Entry(i, "default", "series", f"c{i}", i, "v", "vip", 0, T0, "active", None,
                     {"score": score, "context": context, "payload": payload}, T0, T0)

    entries = [entry(1, 0.9, {"plan": "pro"}, {"code": 7}), entry(2, 0.9, {"plan": "free"}, {"code": "7"}),
               entry(3, None, {}, {"plan": "pro", "code": [7]})]
    found = branch_results(spec.journey, entries)
    assert found["vip"] == {1: True, 2: False, 3: False}  # a null score is not true
    assert found["mixed"] == {1: True, 2: True, 3: False}  # 7 and "7" read as text, [7] as JSON
    assert all(isinstance(v, str) and "nothing_like_it" in v for v in found["missing"].values())

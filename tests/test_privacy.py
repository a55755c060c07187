"""A customer's export and deletion (docs/privacy.md), on both stores: after a deletion no
table holds the id, e-mail or phone in any text column, but for the hashed tombstone; what
arrives later for the customer is dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from ceap.cli import app
from ceap.privacy import catalog, customer_hash, delete_customer, drop_deleted, export_customer, is_deleted
from ceap.store import Store
from tests.privacy_helpers import populate, text_hits

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
GONE = ("cust-zeta-9931", "zeta.person@example.org", "+33 6 12 34 56 78")
KEPT = ("cust-omega-4410", "omega.person@example.org", "+33 6 99 88 77 66")


def test_every_table_of_the_store_is_in_the_catalog(store: Store) -> None:
    with store.tx() as tx:
        tables = set(catalog.store_tables(tx))
    assert tables - catalog.listed() == set(), "a new table: is it in the catalog?"


def test_export_holds_every_table_that_holds_the_customer(store: Store) -> None:
    ids = populate(store, *GONE, NOW, run="a")
    populate(store, *KEPT, NOW, run="b")
    data = export_customer(store, "default", GONE[0], actor="cli:test", now=NOW)
    tables = data["tables"]
    for table in ("candidates", "deliveries", "delivery_events", "profiles", "consent", "consent_history",
                  "event_log", "timers", "inbox", "engagements", "goal_events", "conversions",
                  "learned_outcomes", "quarantine", "stream_queue", "tracked_links", "suppressions",
                  "audit_log"):
        assert tables[table], table
    assert {r["id"] for r in tables["candidates"]} == {ids["candidate"]}
    assert [r["email"] for r in tables["profiles"]] == [GONE[1]]
    assert len(tables["quarantine"]) == 2  # the JSON row naming them, and the raw line with their phone
    assert all(KEPT[0] not in json.dumps(rows) for rows in tables.values())
    history = [(r["channel"], r["topic"], r["old_granted"], r["new_granted"])
               for r in tables["consent_history"]]
    assert ("email", "offer", None, False) in history
    json.dumps(data)  # one JSON document


def test_delete_leaves_nothing_but_the_tombstone(store: Store) -> None:
    populate(store, *GONE, NOW, run="a")
    populate(store, *KEPT, NOW, run="b")
    before = text_hits(store, KEPT[0])
    report = delete_customer(store, "default", GONE[0], actor="cli:test", source="cli@host", now=NOW,
                             reason="GDPR art. 17 request 81")
    assert report.customer_hash == customer_hash("default", GONE[0])
    assert report.deleted["candidates"] == 1 and report.deleted["quarantine"] == 2
    digits = "33612345678"
    assert text_hits(store, GONE[0], GONE[1], GONE[2], digits, "zeta.person") == {}
    with store.tx() as tx:
        [(digest, done)] = tx.execute("SELECT customer_hash, completed_at FROM deletion_log").fetchall()
        [(actor, target, source, detail)] = tx.execute(
            "SELECT actor, target, source, detail FROM audit_log WHERE action = 'customer.delete'").fetchall()
    assert digest == report.customer_hash and done is not None
    assert (actor, target, source) == ("cli:test", f"customer:sha256:{digest}", "cli@host")
    assert json.loads(detail)["reason"] == "GDPR art. 17 request 81"
    assert is_deleted(store, "default", GONE[0]) and not is_deleted(store, "default", KEPT[0])
    after = text_hits(store, KEPT[0])  # the other customer is untouched
    assert {t: len(r) for t, r in after.items()} == {t: len(r) for t, r in before.items()}
    assert delete_customer(store, "default", GONE[0], now=NOW).rows == 0  # again: nothing left


def test_a_deleted_customers_later_events_and_candidates_are_dropped(store: Store) -> None:
    delete_customer(store, "default", GONE[0], now=NOW)
    events = pa.table({"tenant_id": ["default", "default", "other"],
                       "customer_id": [GONE[0], KEPT[0], GONE[0]], "type": ["a", "b", "c"]})
    kept, dropped = drop_deleted(store, events)
    assert dropped == 1 and kept.column("customer_id").to_pylist() == [KEPT[0], GONE[0]]
    candidates = pa.table({"customer_id": [GONE[0], None, KEPT[0]]})
    kept, dropped = drop_deleted(store, candidates, "default")
    assert (dropped, kept.num_rows) == (1, 2)


def test_a_batch_run_writes_no_candidate_for_a_deleted_customer(store_url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from ceap.store import open_store
    from tests.helpers import base_program, write_csv, write_program

    write_csv(tmp_path / "data.csv", "customer_id,score", [f"{GONE[0]},5", f"{KEPT[0]},5"])
    program = base_program(name="p", source={"type": "csv", "path": "data.csv"}, filters=[],
                           scorer={"type": "expression", "weights": {"score": 1.0}, "bias": 0},
                           selection={"threshold": 0.0}, action={"type": "offer", "channels": ["email"]})
    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "p.yaml", program)
    (tmp_path / "ceap.yaml").write_text(f"store: {store_url}\n")
    monkeypatch.chdir(tmp_path)
    opened = open_store(store_url)
    delete_customer(opened, "default", GONE[0], now=NOW)
    runner = CliRunner()
    result = runner.invoke(app, ["--project", str(tmp_path), "run", "p"])
    assert result.exit_code == 0, result.output
    from ceap.model import CandidateQuery

    found = {c.customer_id for c in opened.candidates(CandidateQuery(limit=10, include_expired=True))}
    opened.close()
    assert found == {KEPT[0]}


def test_cli_export_and_delete(store_url: str, tmp_path: Path) -> None:
    from ceap.store import open_store

    opened = open_store(store_url)
    populate(opened, *GONE, NOW, run="a")
    opened.close()
    runner = CliRunner()
    base = ["--project", str(tmp_path), "--store", store_url]
    out = tmp_path / "export.json"
    result = runner.invoke(app, [*base, "customer", "export", GONE[0], "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["tables"]["profiles"][0]["email"] == GONE[1]
    refused = runner.invoke(app, [*base, "customer", "delete", GONE[0]])
    assert refused.exit_code == 2 and "--yes" in refused.output
    result = runner.invoke(app, [*base, "customer", "delete", GONE[0], "--yes", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["customer_hash"] == customer_hash("default", GONE[0]) and report["rows"] > 10
    audit = runner.invoke(app, [*base, "audit", "--action", "customer", "--json"])
    actions = [e["action"] for e in json.loads(audit.stdout)]
    assert actions == ["customer.delete", "customer.export"]
    opened = open_store(store_url)
    try:
        assert text_hits(opened, GONE[0], GONE[1]) == {}
    finally:
        opened.close()


def test_events_arriving_after_a_deletion_are_dropped_by_the_worker(store: Store, tmp_path: Path) -> None:
    from ceap.plugin import PluginContext
    from ceap.realtime.embedded import EmbeddedStream
    from ceap.realtime.worker import Worker
    from tests.helpers import write_program
    from tests.outcome_helpers import rows
    from tests.test_goals import event, program_with_goal

    (tmp_path / "programs").mkdir()
    write_program(tmp_path / "programs" / "big_carts.yaml", program_with_goal())
    context = PluginContext(base_dir=tmp_path, store=store)
    stream = EmbeddedStream.from_dict({"type": "embedded", "stream": "live"}, context)
    stream.publish([json.dumps(event("p0", "purchase", GONE[0], amount=3)).encode()])
    delete_customer(store, "default", GONE[0], now=NOW)  # the queued event goes with the customer
    stream.publish([json.dumps(event(f"p{i}", "purchase", c, amount=5)).encode()
                    for i, c in enumerate((GONE[0], KEPT[0]), start=1)])  # arrives afterwards
    worker = Worker(store, stream, tmp_path / "programs", context)
    stats = worker.run(until_idle=True)
    assert stats.erased == 1 and stream.lag() == 0
    assert rows(store, "SELECT customer_id FROM goal_events") == [(KEPT[0],)]
    assert rows(store, "SELECT customer_id FROM event_log") == [(KEPT[0],)]
    assert text_hits(store, GONE[0]) == {}


def test_goal_events_and_profiles_loaded_after_a_deletion_skip_the_deleted(
        store_url: str, tmp_path: Path) -> None:
    """docs/privacy.md: what arrives later for a deleted customer is dropped, not stored;
    `ceap outcomes import` and `ceap profiles` are arrivals too."""
    from ceap.store import open_store

    opened = open_store(store_url)
    delete_customer(opened, "default", GONE[0], now=NOW)
    opened.close()
    (tmp_path / "orders.csv").write_text(
        f"event_id,customer_id,type,ts\no1,{GONE[0]},purchase,2026-11-21T10:00:00Z\n"
        f"o2,{KEPT[0]},purchase,2026-11-21T10:00:00Z\n")
    (tmp_path / "profiles.csv").write_text(f"customer_id,email\n{GONE[0]},{GONE[1]}\n{KEPT[0]},{KEPT[1]}\n")
    runner = CliRunner()
    imported = runner.invoke(app, ["--store", store_url, "--project", str(tmp_path), "outcomes", "import",
                                   str(tmp_path / "orders.csv"), "--json"])
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.stdout) == {"read": 2, "inserted": 1, "already_present": 0, "rejected": 0,
                                           "deleted_customers": 1}
    loaded = runner.invoke(app, ["--store", store_url, "--project", str(tmp_path), "profiles",
                                 str(tmp_path / "profiles.csv")])
    assert loaded.exit_code == 0, loaded.output
    assert "loaded 1 profile(s)" in loaded.stdout
    opened = open_store(store_url)
    try:
        assert text_hits(opened, GONE[0], GONE[1]) == {}
    finally:
        opened.close()

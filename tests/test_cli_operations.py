"""The operational commands end to end through the CLI: profiles, apikey, sweep,
publish + worker, preview."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ceap.api.auth import tenant_of
from ceap.cli import app
from ceap.delivery.profiles import load_profiles
from ceap.model import CandidateQuery, RunRecord
from ceap.store import open_store
from ceap.testing import make_candidates
from tests.helpers import ORDERS, ORDERS_HEADER, base_program, write_csv, write_program

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    (tmp_path / "programs").mkdir()
    return tmp_path


def store_of(project: Path):  # type: ignore[no-untyped-def]
    return open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")


def test_profiles_are_loaded_from_a_file(project: Path) -> None:
    write_csv(project / "people.csv", "customer_id,email,timezone", ["a,a@x.example,Europe/Paris",
                                                                     "b,b@x.example,UTC"])
    result = runner.invoke(app, ["profiles", "people.csv"])
    assert result.exit_code == 0 and "loaded 2 profile(s)" in result.stdout
    found = load_profiles(store_of(project), [("default", "a"), ("default", "b")])
    assert found[("default", "a")].timezone == "Europe/Paris"
    assert runner.invoke(app, ["profiles", "missing.csv"]).exit_code == 2


def test_profiles_with_an_empty_customer_id_are_refused_naming_the_rows(project: Path) -> None:
    write_csv(project / "people.csv", "customer_id,email", ["a,a@x.example", ",nobody@x.example",
                                                            "c,c@x.example", " ,blank@x.example"])
    result = runner.invoke(app, ["profiles", "people.csv"])
    assert result.exit_code == 2, result.output
    assert "people.csv: row(s) 2, 4: customer_id is empty; nothing was loaded" in result.stderr
    assert load_profiles(store_of(project), [("default", "a")]) == {}


def test_a_program_named_apart_from_its_file_is_found_by_its_name(project: Path) -> None:
    """docs/program-spec.md: `name` defaults to the file name; a program that sets it is
    still run, previewed and reported by that name."""
    write_csv(project / "orders.csv", ORDERS_HEADER, ORDERS)
    write_program(project / "programs" / "carts_v2.yaml", base_program(name="big_carts"))
    result = runner.invoke(app, ["run", "big_carts", "--json"])
    assert result.exit_code == 0, result.output
    [run] = json.loads(result.stdout)
    assert run["program"] == "big_carts" and run["status"] == "succeeded"
    assert runner.invoke(app, ["preview", "big_carts", "--customer", "c1"]).exit_code == 0
    assert runner.invoke(app, ["report", "uplift", "big_carts"]).exit_code == 0
    gone = runner.invoke(app, ["run", "small_carts"])
    assert gone.exit_code == 2 and "small_carts.yaml: file not found" in gone.stderr


def test_an_undeclared_event_attribute_in_a_filter_says_how_to_declare_it(project: Path) -> None:
    (project / "programs" / "foreign.yaml").write_text(yaml.safe_dump({
        "name": "foreign", "source": {"type": "events", "on": ["login"]},
        "filters": [{"id": "abroad", "expr": "country <> 'US'"}],
        "action": {"type": "alert", "channels": ["inapp"]}}))
    (project / "events.jsonl").write_text(json.dumps({
        "id": "e1", "type": "login", "customer_id": "A", "ts": datetime.now(UTC).isoformat(),
        "attributes": {"country": "FR"}}) + "\n")
    assert runner.invoke(app, ["publish", "events.jsonl"]).exit_code == 0
    worked = runner.invoke(app, ["worker", "--until-idle"])
    assert worked.exit_code == 2
    assert "filters[0] (abroad): unknown column 'country'" in worked.stderr
    assert "declared in source.columns (country: string, ...)" in worked.stderr


def test_apikey_is_printed_once_and_stored_hashed(project: Path) -> None:
    result = runner.invoke(app, ["apikey", "create", "mobile-app"])
    key = result.stdout.strip()
    assert result.exit_code == 0 and key.startswith("ceap_")
    store = store_of(project)
    assert tenant_of(store, key) == "default"
    with store.tx() as tx:
        stored = [r[0] for r in tx.execute("SELECT key_hash FROM api_keys").fetchall()]
    assert stored and key not in stored


def test_sweep_removes_expired_candidates_only(project: Path) -> None:
    store = store_of(project)
    now = datetime.now(UTC)
    store.write_run(RunRecord("r", "default", "p", "succeeded", now), make_candidates(
        3, now=now - timedelta(days=10),
        expires_at=lambda i: now - timedelta(days=1) if i < 2 else now + timedelta(days=1)))
    result = runner.invoke(app, ["sweep"])
    assert result.exit_code == 0 and "removed 2 expired candidate(s)" in result.stdout
    assert len(store.candidates(CandidateQuery(include_expired=True))) == 1


def test_publish_then_worker_makes_the_candidate(project: Path) -> None:
    (project / "programs" / "crash.yaml").write_text(yaml.safe_dump({
        "name": "crash", "source": {"type": "events", "on": ["app_crash"]},
        "state": {"crashes_24h": {"count": "app_crash", "window": "24h"}},
        "filters": [{"id": "more_than_3", "expr": "crashes_24h > 3"}],
        "action": {"type": "alert", "channels": ["inapp"]}}))
    t0 = datetime.now(UTC) - timedelta(hours=1)
    lines = [json.dumps({"id": f"e{k}", "type": "app_crash", "customer_id": "A",
                         "ts": (t0 + timedelta(minutes=k)).isoformat()}) for k in range(4)]
    (project / "events.jsonl").write_text("\n".join([*lines, '{"id": "bad", "type": "x"}']))
    published = runner.invoke(app, ["publish", "events.jsonl"])
    assert published.exit_code == 1  # one event was refused ...
    assert "events.jsonl:5: ts" in published.stderr and "published 4 event(s)" in published.stdout
    worked = runner.invoke(app, ["worker", "--until-idle"])
    assert worked.exit_code == 0 and "1 new candidates" in worked.stdout
    [candidate] = store_of(project).candidates(CandidateQuery(program="crash", include_expired=True))
    assert candidate.customer_id == "A"


def test_preview_renders_what_the_customer_would_get(project: Path) -> None:
    write_csv(project / "orders.csv", ORDERS_HEADER, ORDERS)
    (project / "templates").mkdir()
    (project / "templates" / "promo.yaml").write_text(yaml.safe_dump({
        "inapp": {"title": "{{ payload.discount }}% off for you",
                  "body": "Your cart of {{ payload.cart_value }} is waiting."}}))
    spec = base_program()
    spec["action"] = {**spec["action"], "channels": ["inapp"], "template": "promo"}
    write_program(project / "programs" / "big_carts.yaml", spec)
    assert runner.invoke(app, ["run", "big_carts"]).exit_code == 0
    result = runner.invoke(app, ["preview", "big_carts", "--customer", "c1"])
    assert result.exit_code == 0, result.output
    assert "10% off for you" in result.stdout and "Your cart of 90.0 is waiting." in result.stdout

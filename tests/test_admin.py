"""API keys (scopes, expiry, revocation at once on every server), the audit log, and the
admin API for held and dead deliveries (docs/operations-admin.md), on both stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ceap import audit
from ceap.api import create_app
from ceap.api.auth import ApiKeyError, create_key, list_keys, revoke_key
from ceap.cli import app
from ceap.model import utcnow
from ceap.store import Store, open_store
from tests.outcome_helpers import add_delivery, rows, seed

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_scopes_are_enforced_per_route(store: Store) -> None:
    api = TestClient(create_app(store))
    read = create_key(store, "default", "app", scopes=["read"])
    ingest = create_key(store, "default", "relay", scopes="ingest")
    admin = create_key(store, "default", "dashboard", scopes=["admin"])
    assert api.get("/v1/customers/c1/candidates", headers=bearer(read)).status_code == 200
    refused = api.post("/v1/engagements", headers=bearer(read), json=[{"delivery_id": 1, "type": "read"}])
    assert refused.status_code == 403 and "lacks the scope 'ingest'" in refused.json()["detail"]
    assert api.post("/v1/engagements", headers=bearer(ingest),
                    json=[{"delivery_id": 1, "type": "read"}]).status_code == 200
    assert api.get("/v1/customers/c1/candidates", headers=bearer(ingest)).status_code == 403
    assert api.get("/v1/admin/audit", headers=bearer(read)).status_code == 403
    assert api.get("/v1/admin/audit", headers=bearer(admin)).status_code == 200
    assert api.get("/v1/customers/c1/candidates", headers=bearer(admin)).status_code == 403
    with pytest.raises(ApiKeyError, match="unknown scope"):
        create_key(store, "default", "x", scopes=["write"])


def test_a_key_made_before_scopes_reads_and_ingests(store: Store) -> None:
    with store.tx() as tx:  # as the first release wrote it: no scopes, no expiry
        tx.execute("INSERT INTO api_keys (key_hash, tenant_id, name, created_at) VALUES (?,?,?,?)",
                   ("0" * 64, "default", "old", tx.ts(NOW)))
    [old] = list_keys(store, "default")
    assert old.scopes == ("read", "ingest") and old.status(NOW) == "active"


def test_revocation_holds_at_once_on_every_server_process(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)  # two servers, one database
    try:
        key = create_key(first, "default", "app")
        servers = [TestClient(create_app(s)) for s in (first, second)]
        assert [s.get("/v1/customers/c1/candidates", headers=bearer(key)).status_code
                for s in servers] == [200, 200]
        [listed] = list_keys(second, "default")
        revoke_key(second, "default", listed.id[:8], actor="cli:ops", reason="leaked")
        answers = [s.get("/v1/customers/c1/candidates", headers=bearer(key)) for s in servers]
        assert [a.status_code for a in answers] == [401, 401]
        assert answers[0].json() == {"detail": "revoked API key"}
        [entry] = audit.query(first, "default", action="apikey.revoke")
        assert (entry.actor, entry.target, entry.detail["reason"]) == ("cli:ops", f"apikey:{listed.id}",
                                                                        "leaked")
    finally:
        first.close()
        second.close()


def test_an_expired_key_is_refused(store: Store) -> None:
    key = create_key(store, "default", "temp", expires_at=utcnow() - timedelta(seconds=1))
    answer = TestClient(create_app(store)).get("/v1/customers/c1/candidates", headers=bearer(key))
    assert answer.status_code == 401 and answer.json() == {"detail": "expired API key"}


def test_apikey_cli_create_list_revoke_and_audit(store_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--project", str(tmp_path), "--store", store_url]
    made = runner.invoke(app, [*base, "apikey", "create", "dashboard", "--scope", "admin,read",
                               "--expires", "30d"])
    assert made.exit_code == 0, made.output
    assert made.stdout.strip().startswith("ceap_")
    listed = json.loads(runner.invoke(app, [*base, "apikey", "list", "--json"]).stdout)
    [key] = listed
    assert (key["name"], key["scopes"], key["status"]) == ("dashboard", ["read", "admin"], "active")
    assert key["expires_at"] is not None
    bad = runner.invoke(app, [*base, "apikey", "create", "x", "--scope", "root"])
    assert bad.exit_code == 2 and "unknown scope(s) 'root'" in bad.output
    gone = runner.invoke(app, [*base, "apikey", "revoke", key["id"], "--reason", "rotated"])
    assert gone.exit_code == 0 and f"revoked {key['id']}" in gone.stdout
    assert runner.invoke(app, [*base, "apikey", "revoke", "zz"]).exit_code == 2
    tsv = runner.invoke(app, [*base, "audit", "--action", "apikey"]).stdout.splitlines()
    assert tsv[0].split("\t") == ["at", "actor", "action", "target", "detail", "source", "id"]
    assert [line.split("\t")[2] for line in tsv[1:]] == ["apikey.revoke", "apikey.create"]
    assert all(line.split("\t")[1].startswith("cli:") for line in tsv[1:])


def test_admin_api_resolves_held_and_dead_deliveries_with_a_reason(store: Store) -> None:
    ids = seed(store, NOW, 3)
    held = add_delivery(store, ids[0], sent_at=None, status="ambiguous", created_at=NOW)
    dead = add_delivery(store, ids[1], sent_at=None, status="dead", created_at=NOW)
    other = add_delivery(store, ids[2], sent_at=NOW, status="sent")
    with store.tx() as tx:
        tx.execute("UPDATE deliveries SET attempts = 5 WHERE id = ?", (dead,))
        tx.execute("UPDATE candidates SET status = 'failed' WHERE id = ?", (ids[1],))
    api = TestClient(create_app(store))
    key = create_key(store, "default", "dashboard", scopes=["admin"])
    [listed] = list_keys(store, "default")
    listing = api.get("/v1/admin/deliveries?status=dead", headers=bearer(key)).json()
    assert [d["id"] for d in listing] == [dead]
    assert [d["id"] for d in api.get("/v1/admin/deliveries", headers=bearer(key)).json()] == [held]
    no_reason = api.post("/v1/admin/deliveries/resend", headers=bearer(key),
                         json={"ids": [dead], "reason": ""})
    assert no_reason.status_code == 422
    wrong = api.post("/v1/admin/deliveries/drop", headers=bearer(key), json={"ids": [other], "reason": "x"})
    assert wrong.status_code == 409 and "not held (ambiguous) nor dead" in wrong.json()["detail"]
    done = api.post("/v1/admin/deliveries/resend", headers=bearer(key),
                    json={"ids": [dead], "reason": "provider fixed"})
    assert done.json() == {"resolved": 1, "ids": [dead]}
    assert rows(store, "SELECT status, attempts FROM deliveries WHERE id = ?", (dead,)) == [("queued", 0)]
    assert rows(store, "SELECT status FROM candidates WHERE id = ?", (ids[1],)) == [("dispatched",)]
    dropped = api.post("/v1/admin/deliveries/drop", headers=bearer(key),
                       json={"all": True, "status": "ambiguous", "reason": "sent by hand"})
    assert dropped.json() == {"resolved": 1, "ids": [held]}
    log = api.get("/v1/admin/audit?action=delivery", headers=bearer(key)).json()
    assert [(e["action"], e["target"], e["actor"], e["source"], e["detail"]["reason"]) for e in log] == [
        ("delivery.drop", f"delivery:{held}", f"apikey:{listed.id}", "testclient", "sent by hand"),
        ("delivery.resend", f"delivery:{dead}", f"apikey:{listed.id}", "testclient", "provider fixed")]
    keys = api.get("/v1/admin/apikeys", headers=bearer(key)).json()
    assert [(k["id"], k["scopes"], k["status"]) for k in keys] == [(listed.id, ["admin"], "active")]


def test_cli_drops_every_dead_delivery_and_records_it(store_url: str, tmp_path: Path) -> None:
    opened = open_store(store_url)
    ids = seed(opened, NOW, 2)
    dead = [add_delivery(opened, i, sent_at=None, status="dead", created_at=NOW) for i in ids]
    opened.close()
    runner = CliRunner()
    base = ["--project", str(tmp_path), "--store", store_url]
    result = runner.invoke(app, [*base, "deliveries", "drop", "--all-dead", "--reason", "campaign over"])
    assert result.exit_code == 0, result.output
    assert "2 dead delivery(ies) dropped" in result.stdout
    entries = json.loads(runner.invoke(app, [*base, "audit", "--json"]).stdout)
    assert sorted(e["target"] for e in entries) == sorted(f"delivery:{d}" for d in dead)
    assert {e["detail"]["was"] for e in entries} == {"dead"}

"""Every consent change is kept (who, channel, topic, old -> new, when, source) and is in
the audit log; visible through the CLI and the admin API. Both stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ceap import audit
from ceap.api import create_app
from ceap.api.auth import create_key
from ceap.cli import app
from ceap.delivery.consent_store import (
    consent_history,
    grant_consent,
    handle_inbound_sms,
    revoke_consent,
)
from ceap.store import Store, open_store

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def changes(store: Store, customer: str = "c1") -> list[tuple[str, str, bool | None, bool, str | None]]:
    return [(c.channel, c.topic, c.old_granted, c.new_granted, c.source)
            for c in consent_history(store, "default", customer)]


def test_each_change_is_kept_with_its_old_value(store: Store) -> None:
    grant_consent(store, "default", "c1", "email", "news", source="signup", now=T0)
    grant_consent(store, "default", "c1", "email", "news", source="again", now=T0 + timedelta(minutes=1))
    revoke_consent(store, "default", "c1", "email", "*", source="support", now=T0 + timedelta(minutes=2),
                   actor="cli:alice")
    assert changes(store) == [("email", "news", None, True, "signup"),
                              ("email", "news", True, False, "support"),  # revoking * revokes the topic
                              ("email", "*", None, False, "support")]
    [*_, last] = consent_history(store, "default", "c1")
    assert last.actor == "cli:alice" and last.at == T0 + timedelta(minutes=2)
    log = audit.query(store, "default", action="consent")
    assert [(e.action, e.target, e.detail["topic"]) for e in log][-1] == ("consent.grant", "customer:c1",
                                                                          "news")
    assert len(log) == 3  # writing what is already there is no change


def test_sms_stop_and_start_are_in_the_history(store: Store) -> None:
    with store.tx() as tx:
        tx.execute("INSERT INTO profiles (tenant_id, customer_id, phone, updated_at) VALUES (?,?,?,?)",
                   ("default", "c1", "+1 555 010 9999", tx.ts(T0)))
    grant_consent(store, "default", "c1", "sms", "alerts", source="form", now=T0)
    handle_inbound_sms(store, "default", "+15550109999", "STOP", now=T0 + timedelta(minutes=1))
    handle_inbound_sms(store, "default", "+15550109999", "start", now=T0 + timedelta(minutes=2))
    assert changes(store) == [("sms", "alerts", None, True, "form"),
                              ("sms", "alerts", True, False, "sms:STOP"),
                              ("sms", "*", None, False, "sms:STOP"),
                              ("sms", "*", False, True, "sms:START"),
                              ("sms", "alerts", False, True, "sms:START")]
    assert all("555" not in (e.source or "") for e in audit.query(store, "default"))  # no number logged


def test_history_through_the_cli_and_the_api(store_url: str, tmp_path: Path) -> None:
    opened = open_store(store_url)
    grant_consent(opened, "default", "c9", "push", source="app", now=T0)
    revoke_consent(opened, "default", "c9", "push", source="settings", now=T0 + timedelta(hours=1))
    key = create_key(opened, "default", "dash", scopes=["admin"])
    answer = TestClient(create_app(opened)).get("/v1/admin/customers/c9/consent",
                                                headers={"Authorization": f"Bearer {key}"}).json()
    opened.close()
    assert [(c["channel"], c["granted"]) for c in answer["current"]] == [("push", False)]
    assert [(h["old_granted"], h["new_granted"], h["source"]) for h in answer["history"]] == [
        (None, True, "app"), (True, False, "settings")]
    runner = CliRunner()
    base = ["--project", str(tmp_path), "--store", store_url]
    result = runner.invoke(app, [*base, "customer", "consent", "c9", "--history", "--json"])
    assert result.exit_code == 0, result.output
    assert [(h["old_granted"], h["new_granted"]) for h in json.loads(result.stdout)] == [(None, True),
                                                                                        (True, False)]
    now = runner.invoke(app, [*base, "customer", "consent", "c9"]).stdout.splitlines()
    assert now[0] == "channel\ttopic\tgranted\tsource\tupdated_at" and now[1].startswith("push\t*\tfalse")

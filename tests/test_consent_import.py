"""``ceap customer consent-import``: a consent list from a file, all rows or none, each
change in the consent history; the dispatcher's consent policy then follows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ceap.cli import app
from ceap.delivery.consent_store import consent_history, list_consent
from ceap.store import open_store

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    return tmp_path


def _consent(project: Path, customer: str) -> dict[tuple[str, str], bool]:
    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    try:
        return {(r.channel, r.topic): r.granted for r in list_consent(store, "default", customer)}
    finally:
        store.close()


def test_a_csv_list_is_recorded_with_its_sources(project: Path) -> None:
    (project / "optins.csv").write_text(
        "customer_id,channel,topic,granted,source\n"
        "c1,sms,*,yes,signup form 2026-05-01\n"
        "c2,sms,newsletter,TRUE,\n"
        "c2,email,,revoke,\n")
    result = runner.invoke(app, ["customer", "consent-import", "optins.csv", "--source", "crm export"])
    assert result.exit_code == 0, result.output
    assert "recorded 3 consent row(s)" in result.output
    assert _consent(project, "c1") == {("sms", "*"): True}
    assert _consent(project, "c2") == {("sms", "newsletter"): True, ("email", "*"): False}
    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    try:
        changes = consent_history(store, "default", "c2")
    finally:
        store.close()
    assert [(c.channel, c.new_granted, c.source) for c in changes] == [
        ("sms", True, "crm export"), ("email", False, "crm export")]
    assert all(c.actor and c.actor.startswith("cli:") for c in changes)


def test_a_bad_row_records_nothing(project: Path) -> None:
    (project / "optins.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"customer_id": "c1", "channel": "sms", "granted": True},
        {"customer_id": "c2", "channel": "sms", "granted": "maybe"},
        {"customer_id": "", "channel": "sms", "granted": False}]) + "\n")
    result = runner.invoke(app, ["customer", "consent-import", "optins.jsonl"])
    assert result.exit_code == 2
    assert "optins.jsonl: row 2: granted 'maybe' is not true or false" in result.output
    assert "optins.jsonl: row 3: customer_id is empty" in result.output
    assert "nothing was recorded" in result.output
    assert _consent(project, "c1") == {}
    (project / "cols.csv").write_text("customer,channel,granted\nc1,sms,yes\n")
    result = runner.invoke(app, ["customer", "consent-import", "cols.csv"])
    assert result.exit_code == 2 and "missing column(s) customer_id" in result.output, result.output


def test_rows_of_deleted_customers_are_skipped(project: Path) -> None:
    assert runner.invoke(app, ["customer", "delete", "gone", "--yes"]).exit_code == 0
    (project / "optins.csv").write_text("customer_id,channel,granted\ngone,sms,yes\nc1,sms,yes\n")
    result = runner.invoke(app, ["customer", "consent-import", "optins.csv"])
    assert result.exit_code == 0, result.output
    assert "recorded 1 consent row(s)" in result.output and "1 row(s) of deleted customers" in result.output
    assert _consent(project, "gone") == {}


def test_on_postgresql_a_list_is_recorded_in_one_transaction(project: Path, pg_url: str) -> None:
    (project / "optins.csv").write_text("customer_id,channel,topic,granted\n"
                                        "c1,sms,*,yes\nc1,sms,news,yes\nc1,sms,*,no\n")
    result = runner.invoke(app, ["--store", pg_url, "customer", "consent-import", "optins.csv"])
    assert result.exit_code == 0, result.output
    store = open_store(pg_url)
    try:
        # in file order: revoking * last revokes the topic granted before it too
        now = {(r.channel, r.topic): r.granted for r in list_consent(store, "default", "c1")}
        assert now == {("sms", "*"): False, ("sms", "news"): False}
        assert len(consent_history(store, "default", "c1")) == 4
    finally:
        store.close()


def test_a_channel_the_project_does_not_have_is_named(project: Path) -> None:
    (project / "ceap.yaml").write_text("channels:\n  sms: {type: twilio_sms, account_sid: AC1, "
                                       "from_number: '+15550000000'}\n")
    (project / "optins.csv").write_text("customer_id,channel,granted\nc1,SMS,yes\nc2,sms,yes\n")
    result = runner.invoke(app, ["customer", "consent-import", "optins.csv"])
    assert result.exit_code == 0, result.output
    assert "warning: no channel named SMS in ceap.yaml" in result.output

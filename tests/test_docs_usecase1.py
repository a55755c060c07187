"""Use case 1 (predictive issue resolution) as docs/realtime.md and docs/channels-sms-push.md
tell a new user to run it: the repository's program and template, profiles loaded with
``ceap profiles``, app crashes published (one as an EventBridge envelope), ``ceap worker
--until-idle``, then ``ceap dispatch`` through ``twilio_sms`` pointed at a local server
that speaks Twilio's Messages API. Who gets the SMS, what it says, who does not and why."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ceap.cli import app
from ceap.model import CandidateQuery, utcnow
from ceap.store import open_store
from ceap.testing.provider import ProviderServer, Reply

ROOT = Path(__file__).resolve().parent.parent
SID = "AC0123456789abcdef0123456789abcdef"
runner = CliRunner()


def _crash(event_id: str, customer: str, ts: str) -> dict[str, object]:
    return {"id": event_id, "type": "app_crash", "ts": ts, "customer_id": customer,
            "attributes": {"platform": "android", "app_version": "4.2", "error_code": "E42"}}


def test_more_than_3_crashes_in_24h_get_the_troubleshooting_sms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token-for-tests")
    for folder, name in (("programs", "predictive_issue_resolution"), ("templates", "issue_resolution_sms")):
        (tmp_path / folder).mkdir()
        shutil.copy(ROOT / folder / f"{name}.yaml", tmp_path / folder)
    (tmp_path / "profiles.csv").write_text("customer_id,phone\nC1,+15551110001\nC2,+15551110002\n"
                                           "C3,+15551110003\nC4,\n")
    now = utcnow().replace(microsecond=0)

    def at(hours_ago: float) -> str:
        return (now - timedelta(hours=hours_ago)).isoformat()

    events = [_crash(f"c1-{k}", "C1", at(5 - k)) for k in range(3)]
    events += [_crash(f"c2-{k}", "C2", at(5 - k)) for k in range(3)]                # 3: not more than 3
    events += [_crash(f"c3-{k}", "C3", at(40 - k)) for k in range(2)]
    events += [_crash(f"c3-{k}", "C3", at(5 - k)) for k in range(2, 4)]             # 4 in 2 days, 2 in 24 h
    events += [_crash(f"c4-{k}", "C4", at(5 - k)) for k in range(4)]                # no phone
    events.append(_crash("c1-0", "C1", at(5)))                                        # a client's retry
    envelope = {"version": "0", "id": "c1-3", "detail-type": "app_crash", "source": "com.acme.app",
                "time": at(1), "region": "us-east-1", "resources": [],
                "detail": {"customer_id": "C1", "platform": "android", "app_version": "4.2",
                           "error_code": "E42"}}                                      # C1's 4th crash
    lines = [json.dumps(e) for e in [*events, envelope]]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")

    with ProviderServer() as twilio:
        twilio.default = lambda request: Reply(201, {"sid": "SM" + "0" * 32, "status": "queued"})
        (tmp_path / "ceap.yaml").write_text(f"""\
channels:
  sms:
    type: twilio_sms
    base_url: {twilio.url}
    allow_private: true
    account_sid: {SID}
    from_number: "+15550000000"
    rate_per_sec: 100
""")
        for args in (["validate", "programs/"], ["profiles", "profiles.csv"],
                     ["publish", "events.jsonl"], ["worker", "--until-idle"], ["dispatch"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, (args, result.output)
        assert runner.invoke(app, ["dispatch"]).exit_code == 0                       # nothing twice
        calls = twilio.calls(f"/2010-04-01/Accounts/{SID}/Messages.json")

    assert [c.form()["To"] for c in calls] == ["+15551110001"]
    form = calls[0].form()
    assert form["From"] == "+15550000000"
    assert form["Body"] == ("We're sorry: the app crashed 4 times on your android today. A fix for "
                            "version 4.2: https://help.ceap.example/troubleshoot?code=E42 Rather talk "
                            "to us? Reply CALL and we'll call you back.")
    assert calls[0].headers["authorization"].startswith("Basic ")
    store = open_store(f"sqlite:///{tmp_path / '.ceap' / 'ceap.db'}")
    try:
        found = {c.customer_id: c for c in store.candidates(
            CandidateQuery(program="predictive_issue_resolution", include_expired=True))}
    finally:
        store.close()
    assert set(found) == {"C1", "C4"}                                                 # not C2, not C3
    assert (found["C1"].status, found["C4"].status) == ("sent", "suppressed")
    assert found["C4"].status_reason == "no_address:sms"

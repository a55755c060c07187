"""The dashboard over HTTP: sign-in, one tenant per key, the numbers of each page against
the API and the CLI, the charts from the CLI's own specs, the admin actions on held
and dead deliveries and their audit log entries. (tests/test_ui_browser.py loads the same
pages in a real Chromium.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ceap import audit
from ceap.api import create_app
from ceap.api.auth import list_keys
from ceap.charts import funnel_chart
from ceap.cli import app as cli
from ceap.delivery.consent_store import grant_consent, revoke_consent
from ceap.delivery.outbox import Outbox
from ceap.experiments.uplift import uplift_report
from ceap.model import utcnow
from ceap.pipeline.funnel import Funnel
from ceap.store import Store, open_store
from ceap.ui.session import Session, Sessions
from tests.experiment_helpers import add_conversions
from tests.ui_helpers import PROGRAM, Scene, populate

ADMIN = "admin-secret-for-tests"


@pytest.fixture(params=["sqlite", "postgres"])
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Scene, str]]:
    url = f"sqlite:///{tmp_path / 'ceap.db'}" if request.param == "sqlite" else \
        str(request.getfixturevalue("pg_url"))
    store = open_store(url)
    try:
        yield store, populate(store, tmp_path, utcnow()), url
    finally:
        store.close()


@pytest.fixture
def web(scene: tuple[Store, Scene, str], monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("CEAP_ADMIN_KEY", ADMIN)
    store, s, _ = scene
    return TestClient(create_app(store, programs=s.programs), follow_redirects=False)


def sign_in(web: TestClient, key: str, admin: str = "") -> TestClient:
    r = web.post("/ui/login", data={"key": key, "admin_key": admin, "next": "/ui/deliveries"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/deliveries"
    return web


def specs_of(html: str) -> dict[str, Any]:
    return {m.group(1): json.loads(m.group(2)) for m in re.finditer(
        r'<script type="application/json" class="vl-spec" data-target="([^"]+)">(.*?)</script>',
        html, re.S)}


def cell(html: str, pattern: str) -> str:
    found = re.search(pattern, html, re.S)
    assert found, pattern
    return found.group(1).strip()


def test_pages_need_a_signed_in_key(web: TestClient, scene: tuple[Store, Scene, str]) -> None:
    for page in ("/ui/programs", "/ui/customers/u0001", "/ui/deliveries", "/ui/experiments",
                 "/ui/realtime"):
        r = web.get(page)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=%2Fui%2F")
    bad = web.post("/ui/login", data={"key": "ceap_not-a-key", "next": "/ui/programs"})
    assert bad.status_code == 401 and "unknown API key" in bad.text
    assert web.post("/ui/login", data={"key": scene[1].keys["acme"], "admin_key": "wrong"}).status_code == 401
    # a cookie is signed: one naming another tenant, signed with another secret, is no session
    sign_in(web, scene[1].keys["acme"])
    assert web.get("/ui/programs").status_code == 200
    forged = Sessions("not-the-servers-secret").dump(Session("globex", "x", True, "c"))
    web.cookies.clear()
    web.cookies.set("ceap_session", forged, path="/ui")
    assert web.get("/ui/programs").status_code == 303


def test_a_tenant_sees_only_its_own_data(web: TestClient, scene: tuple[Store, Scene, str]) -> None:
    store, s, _ = scene
    sign_in(web, s.keys["acme"])
    page = web.get("/ui/deliveries").text
    held = [int(i) for i in re.findall(r'<tr data-delivery="(\d+)"><td><input',
                                       cell(page, r'<table id="held">(.*?)</table>'))]
    dead = [int(i) for i in re.findall(r'<tr data-delivery="(\d+)"><td><input',
                                       cell(page, r'<table id="dead">(.*?)</table>'))]
    assert sorted(held) == sorted(s.held["acme"]) and sorted(dead) == sorted(s.dead["acme"])
    assert not set(held + dead) & set(s.held["globex"] + s.dead["globex"])
    # globex's run and a customer only globex has are not acme's to see
    globex_run = store.runs("globex", PROGRAM, 1)[0].run_id
    assert web.get(f"/ui/programs/{PROGRAM}?run={globex_run}").status_code == 404
    with store.tx() as tx:
        tx.execute("UPDATE candidates SET customer_id = 'only-globex' WHERE tenant_id = 'globex' AND "
                   "customer_id = 'u0003'")
    assert web.get("/ui/customers/only-globex").status_code == 404
    assert web.get("/ui/customers/u0003").status_code == 200
    # the admin action cannot reach another tenant's deliveries either
    sign_in(web, s.keys["acme"], ADMIN)
    csrf = cell(web.get("/ui/deliveries").text, r'name="csrf" value="([^"]+)"')
    r = web.post("/ui/deliveries/resolve", data={"csrf": csrf, "action": "drop", "reason": "x",
                                                 "id": [str(s.held["globex"][0])]})
    assert r.status_code == 400 and "not found for tenant" in r.text
    assert Outbox(store, "t").deliveries("globex", status="ambiguous") != []
    assert len(Outbox(store, "t").deliveries("globex", status="ambiguous")) == len(s.held["globex"])


def test_program_pages_show_schedule_runs_and_the_cli_funnel(web: TestClient,
                                                             scene: tuple[Store, Scene, str],
                                                             tmp_path: Path) -> None:
    store, s, url = scene
    sign_in(web, s.keys["acme"])
    listing = web.get("/ui/programs").text
    row = cell(listing, rf'<tr data-program="{PROGRAM}">(.*?)</tr>')
    assert "live" in row and "0 6 * * *" in row and "Europe/Paris" in row and "CE" in row
    run = store.runs("acme", PROGRAM, 1)[0]
    page = web.get(f"/ui/programs/{PROGRAM}").text
    assert cell(page, r'<code id="run-id">(.*?)</code>') == run.run_id
    funnel = Funnel.from_dict(run.funnel)
    assert specs_of(page)["funnel-chart"] == json.loads(json.dumps(funnel_chart(PROGRAM, funnel,
                                                                                run.run_id)))
    plot = tmp_path / "funnel.json"  # `ceap runs --plot` writes the same spec
    result = CliRunner().invoke(cli, ["--project", str(s.programs.parent), "--store", url, "--tenant",
                                      "acme", "runs", "--program", PROGRAM, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert json.loads(plot.read_text()) == specs_of(page)["funnel-chart"]
    assert f"<td>quarantine: {next(iter(funnel.quarantine_reasons))}" in page
    assert cell(page, r"<td>new candidates written</td><td class=\"n\">([\d,]+)</td>") == \
        f"{funnel.written:,}"
    assert page.count("06:00") >= 3  # the next three runs, in the program's time zone


def test_customer_page_matches_the_api(web: TestClient, scene: tuple[Store, Scene, str]) -> None:
    _, s, _ = scene
    sign_in(web, s.keys["acme"])
    page = web.get(f"/ui/customers/{s.customer}").text
    api = web.get(f"/v1/customers/{s.customer}/candidates?limit=100",
                  headers={"Authorization": f"Bearer {s.keys['acme']}"}).json()
    shown = dict(re.findall(r'<tr data-candidate="(\d+)">.*?<td class="n score">([\d.\-]+)</td>', page, re.S))
    for c in api:
        assert shown[str(c["id"])] == f"{c['score']:.3f}"
    assert "unsubscribe link" in page and "<td>no</td>" in page  # consent revoked, and where
    assert "unsubscribe" in cell(page, r'<table id="engagements">(.*?)</table>')
    found = web.get("/ui/customers?q=u000").text
    assert f'/ui/customers/{s.customer}"' in found


def test_customer_page_shows_the_consent_history_the_cli_reports(
        web: TestClient, scene: tuple[Store, Scene, str], tmp_path: Path) -> None:
    store, s, url = scene
    grant_consent(store, "acme", s.customer, "sms", "offers", source="preference_center",
                  actor="customer")
    revoke_consent(store, "acme", s.customer, "sms", "offers", source="import", actor="cli:ops")
    result = CliRunner().invoke(cli, ["--project", str(s.programs.parent), "--store", url, "--tenant",
                                      "acme", "customer", "consent", s.customer, "--history", "--json"])
    assert result.exit_code == 0, result.output
    cli_rows = json.loads(result.stdout)
    assert len(cli_rows) >= 3  # the unsubscribe link's revocation, the grant, the revocation
    sign_in(web, s.keys["acme"])
    table = cell(web.get(f"/ui/customers/{s.customer}").text, r'<table id="consent-history">(.*?)</table>')
    shown = re.findall(r'<tr data-change="\d+" data-at="([^"]*)">.*?class="channel">(.*?)</td>'
                       r'<td class="topic">(.*?)</td><td class="change">(.*?)</td>'
                       r'<td class="source">(.*?)</td><td class="actor">(.*?)</td>', table, re.S)

    def yes_no(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "no")

    assert [(datetime.fromisoformat(at), *rest) for at, *rest in shown] == \
        [(datetime.fromisoformat(c["at"]), c["channel"], c["topic"],
          f"{yes_no(c['old_granted'])} &rarr; {yes_no(c['new_granted'])}", c["source"] or "-",
          c["actor"] or "-") for c in cli_rows]
    assert shown[-1][1:] == ("sms", "offers", "yes &rarr; no", "import", "cli:ops")


def test_deliveries_page_counts_equal_the_store(web: TestClient, scene: tuple[Store, Scene, str]) -> None:
    store, s, _ = scene
    sign_in(web, s.keys["acme"])
    page = web.get("/ui/deliveries").text
    counts = Outbox(store, "t").counts("acme")
    for status, n in counts.items():
        assert cell(page, rf'<tr data-channel="email">.*?data-status="{status}">([\d,]+)<') == f"{n:,}"
    dead = cell(page, r'<table id="dead">(.*?)</table>')
    assert all(f'data-delivery="{i}"' in dead for i in s.dead["acme"])
    assert specs_of(page)["deliveries-chart"]["facet"]["field"] == "channel"


def test_experiment_page_is_the_cli_report(web: TestClient, scene: tuple[Store, Scene, str],
                                           tmp_path: Path) -> None:
    store, s, url = scene
    sign_in(web, s.keys["acme"])
    page = web.get(f"/ui/experiments/{PROGRAM}?by=score_decile").text
    plot = tmp_path / "uplift.json"
    result = CliRunner().invoke(cli, ["--project", str(s.programs.parent), "--store", url, "--tenant",
                                      "acme", "report", "uplift", PROGRAM, "--by", "score_decile",
                                      "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for arm, a in report["arms"].items():
        row = cell(page, rf'<tr data-arm="{arm}">(.*?)</tr>')
        assert f'customers">{a["customers"]:,}<' in row and f'converted">{a["converted"]:,}<' in row
        assert f'rate">{a["rate"]:.2%}<' in row
        assert f'opened">{a["opened"]:,}<' in row and f'clicked">{a["clicked"]:,}<' in row
    [main] = report["comparisons"]
    assert cell(page, rf'<tr data-label="{main["label"]}">.*?class="n uplift">(.*?)</td>') == \
        f"{main['absolute_uplift']:+.2%}"
    assert specs_of(page)["uplift-chart"] == json.loads(plot.read_text())  # the --plot spec
    assert specs_of(page)["bandit-chart"]["data"]["values"]
    assert uplift_report(store, "acme", PROGRAM, utcnow()).candidates == report["candidates"]
    listing = web.get("/ui/experiments").text
    assert f'<tr data-program="{PROGRAM}">' in listing


def test_realtime_page_shows_what_the_store_records(web: TestClient,
                                                    scene: tuple[Store, Scene, str]) -> None:
    store, s, _ = scene
    from ceap.realtime.status import StatusReporter

    now = utcnow()
    ours = StatusReporter(store, "acme", "events", now)
    ours.worker = "host-a:101"
    ours.report({"3": now.replace(tzinfo=None)}, 1234, 50, 48, now)
    theirs = StatusReporter(store, "globex", "events", now)
    theirs.worker = "host-b:202"
    theirs.report({"7": now.replace(tzinfo=None)}, 9, 5, 5, now)
    sign_in(web, s.keys["acme"])
    page = web.get("/ui/realtime").text
    row = cell(page, r'<tr data-worker="host-a:101">(.*?)</tr>')
    assert '<span class="partition">3: ' in row and '<td class="n lag">1,234</td>' in row
    assert "host-b:202" not in page  # another tenant's worker
    assert cell(page, r'<td class="n" id="events">([\d,]+)</td>') == "200"
    assert "worker-1" in page and "type: missing" in page
    assert specs_of(page)["events-chart"]["data"]["values"]


def test_admin_actions_change_the_store_once_with_a_reason(web: TestClient,
                                                           scene: tuple[Store, Scene, str]) -> None:
    store, s, _ = scene
    first, second, *_ = s.held["acme"]
    sign_in(web, s.keys["acme"])  # not admin
    page = web.get("/ui/deliveries").text
    csrf = cell(page, r'name="csrf" value="([^"]+)"')
    assert 'id="apply"' not in page
    form = {"csrf": csrf, "action": "resend", "reason": "relay has no record", "id": [str(first)]}
    assert web.post("/ui/deliveries/resolve", data=form).status_code == 403
    sign_in(web, s.keys["acme"], ADMIN)
    page = web.get("/ui/deliveries").text
    csrf = cell(page, r'name="csrf" value="([^"]+)"')
    assert web.post("/ui/deliveries/resolve", data={**form, "csrf": "stale"}).status_code == 403
    empty = web.post("/ui/deliveries/resolve", data={**form, "csrf": csrf, "reason": " "})
    assert empty.status_code == 400 and "a reason is required" in empty.text
    done = web.post("/ui/deliveries/resolve", data={**form, "csrf": csrf, "id": [str(first), str(second)]})
    assert done.status_code == 303 and "requeued" in web.get(done.headers["location"]).text
    with store.tx() as tx:
        rows = tx.execute("SELECT id, status, ambiguity FROM deliveries WHERE id IN (?, ?) ORDER BY id",
                          (first, second)).fetchall()
        events = tx.execute("SELECT detail FROM delivery_events WHERE delivery_id = ? AND "
                            "status = 'resolved'", (first,)).fetchall()
    assert [tuple(r) for r in rows] == [(first, "queued", "resent"), (second, "queued", "resent")]
    assert [e[0] for e in events] == ["resend: relay has no record"]
    again = web.post("/ui/deliveries/resolve", data={**form, "csrf": csrf})
    assert again.status_code == 400 and "not held" in again.text


def test_without_keys_the_pages_are_the_default_tenants(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        web = TestClient(create_app(store, auth=False), follow_redirects=False)
        r = web.get("/ui/programs")
        assert r.status_code == 200 and '<b id="tenant">default</b>' in r.text
        assert web.get("/ui").status_code == 303
        assert web.get("/ui/static/vendor/vega-embed.min.js").status_code == 200
        assert web.get("/ui/customers/nobody").status_code == 404
    finally:
        store.close()


def test_pages_stay_in_the_dashboard_after_sign_in(web: TestClient, scene: tuple[Store, Scene, str]) -> None:
    r = web.post("/ui/login", data={"key": scene[1].keys["acme"], "next": "https://evil.example/"})
    assert r.headers["location"] == "/ui/programs"


def test_a_kept_uplift_report_is_recomputed_when_outcomes_change(
        web: TestClient, scene: tuple[Store, Scene, str]) -> None:
    store, s, _ = scene
    sign_in(web, s.keys["acme"])
    path = f"/ui/experiments/{PROGRAM}?by=variant"
    before = int(cell(web.get(path).text, r'<tr data-arm="treatment">.*?converted">([\d,]+)<'))
    assert int(cell(web.get(path).text, r'<tr data-arm="treatment">.*?converted">([\d,]+)<')) == before
    with store.tx() as tx:
        cid, customer = tx.execute(
            "SELECT id, customer_id FROM candidates WHERE tenant_id = 'acme' AND arm = 'treatment' AND "
            "customer_id NOT IN (SELECT customer_id FROM conversions WHERE tenant_id = 'acme') "
            "ORDER BY id LIMIT 1").fetchone()
    add_conversions(store, [("acme", PROGRAM, cid, customer, 10.0)], utcnow())
    after = int(cell(web.get(path).text, r'<tr data-arm="treatment">.*?converted">([\d,]+)<'))
    assert after == before + 1


def test_admin_actions_are_in_the_audit_log_with_who_where_and_why(
        web: TestClient, scene: tuple[Store, Scene, str]) -> None:
    store, s, _ = scene
    sign_in(web, s.keys["acme"], ADMIN)
    csrf = cell(web.get("/ui/deliveries").text, r'name="csrf" value="([^"]+)"')
    target = s.held["acme"][0]
    r = web.post("/ui/deliveries/resolve", data={"csrf": csrf, "action": "mark-sent",
                                                 "reason": "in the provider's log", "id": [str(target)]})
    assert r.status_code == 303
    [key] = [k for k in list_keys(store, "acme") if k.name == "acme-ops"]
    [entry] = audit.query(store, "acme", target=f"delivery:{target}")
    assert (entry.actor, entry.action, entry.source) == (f"apikey:{key.id}", "delivery.mark-sent",
                                                         "testclient")
    assert entry.detail["reason"] == "in the provider's log" and entry.detail["was"] == "ambiguous"
    assert audit.query(store, "globex", target=f"delivery:{target}") == []


def test_dead_deliveries_get_the_same_admin_actions(web: TestClient,
                                                    scene: tuple[Store, Scene, str]) -> None:
    store, s, _ = scene
    first, second = s.dead["acme"][:2]
    sign_in(web, s.keys["acme"], ADMIN)
    page = web.get("/ui/deliveries").text
    assert re.search(rf'<table id="dead">.*?name="id" value="{first}"', page, re.S)
    csrf = cell(page, r'name="csrf" value="([^"]+)"')
    resend = web.post("/ui/deliveries/resolve", data={"csrf": csrf, "action": "resend",
                                                      "reason": "provider is back", "id": [str(first)]})
    assert resend.status_code == 303 and "requeued" in web.get(resend.headers["location"]).text
    drop = web.post("/ui/deliveries/resolve", data={"csrf": csrf, "action": "drop",
                                                    "reason": "number gone", "id": [str(second)]})
    assert drop.status_code == 303
    with store.tx() as tx:
        rows = tx.execute("SELECT id, status, attempts FROM deliveries WHERE id IN (?, ?) ORDER BY id",
                          (first, second)).fetchall()
    assert [tuple(r) for r in rows] == [(first, "queued", 0), (second, "cancelled", 5)]
    assert [(e.action, e.detail["was"], e.detail["reason"])
            for e in audit.query(store, "acme", action="delivery")[:2]] == \
        [("delivery.drop", "dead", "number gone"), ("delivery.resend", "dead", "provider is back")]
    again = web.post("/ui/deliveries/resolve", data={"csrf": csrf, "action": "drop",
                                                     "reason": "again", "id": [str(first)]})
    assert again.status_code == 400 and "not held (ambiguous) nor dead" in again.text

"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): every page
loads with no console error and no failed request, its charts drawn by the vendored
vega-embed; the numbers shown equal the API's; an admin action done in the page changes
the store and is in the audit log; a tenant's key does not reach another tenant's page.

One browser and one server for the module. Without chromium the tests skip, and fail
when CEAP_REQUIRE_SERVICES=1 (CI installs it: .ci/run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ceap import audit
from ceap.api import create_app
from ceap.api.auth import list_keys
from ceap.delivery.outbox import Outbox
from ceap.model import utcnow
from ceap.store import Store, open_store
from tests.ui_helpers import PROGRAM, Scene, populate
from tests.ui_server import browser, chromium_missing, serving

ADMIN = "browser-admin-key"
PAGES = ["/ui/programs", f"/ui/programs/{PROGRAM}", "/ui/customers?q=u00", "/ui/customers/{customer}",
         "/ui/deliveries", "/ui/experiments", f"/ui/experiments/{PROGRAM}",
         f"/ui/experiments/{PROGRAM}?by=variant", "/ui/realtime"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store, Scene]]:
    missing = chromium_missing()
    if missing:
        if os.environ.get("CEAP_REQUIRE_SERVICES") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    folder = tmp_path_factory.mktemp("ui")
    store = open_store(f"sqlite:///{folder / 'ceap.db'}")
    scene = populate(store, folder, utcnow())
    old = os.environ.get("CEAP_ADMIN_KEY")
    os.environ["CEAP_ADMIN_KEY"] = ADMIN
    try:
        with serving(create_app(store, programs=scene.programs)) as base:
            yield base, store, scene
    finally:
        if old is None:
            os.environ.pop("CEAP_ADMIN_KEY", None)
        else:
            os.environ["CEAP_ADMIN_KEY"] = old
        store.close()


@pytest.fixture(scope="module")
def chromium(site: tuple[str, Store, Scene]) -> Iterator[Any]:
    with browser() as b:
        yield b


class Watch:
    """Console errors, uncaught errors and failed requests of a page."""

    def __init__(self, page: Any):
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 else None)


def signed_in(chromium: Any, base: str, key: str, admin: str = "") -> Any:
    context = chromium.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/ui/programs")  # -> the sign-in form
    page.fill("#key", key)
    if admin:
        page.fill("#admin_key", admin)
    page.click("#sign-in")
    page.wait_for_url("**/ui/programs")
    return page


def load(page: Any, path: str) -> None:
    """Open ``path`` and wait until every chart on it is drawn."""
    page.goto(path)
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => [...document.querySelectorAll('div.chart')]"
                           ".every(c => c.dataset.rendered === 'true')", timeout=15_000)


def test_every_page_loads_clean_with_its_charts_drawn(chromium: Any, site: tuple[str, Store, Scene]) -> None:
    base, _, scene = site
    page = signed_in(chromium, base, scene.keys["acme"])
    watch = Watch(page)
    charts = 0
    for path in PAGES:
        load(page, path.format(customer=scene.customer))
        assert page.locator("#tenant").inner_text() == "acme", path
        charts += page.locator("div.chart svg").count()
    assert watch.problems == []
    assert charts >= 6  # funnel, deliveries, uplift, bandit (twice), events
    page.context.close()


def test_numbers_on_the_pages_equal_the_api(chromium: Any, site: tuple[str, Store, Scene]) -> None:
    base, store, scene = site
    key = scene.keys["acme"]
    page = signed_in(chromium, base, key)
    load(page, f"/ui/customers/{scene.customer}")
    api = httpx.get(f"{base}/v1/customers/{scene.customer}/candidates?limit=100",
                    headers={"Authorization": f"Bearer {key}"}).json()
    for c in api:
        shown = page.locator(f'tr[data-candidate="{c["id"]}"] td.score').inner_text()
        assert shown == f"{c['score']:.3f}"
    load(page, "/ui/deliveries")
    for status, n in Outbox(store, "t").counts("acme").items():
        cell = page.locator(f'#totals tr[data-channel="email"] td[data-status="{status}"]')
        assert cell.inner_text() == f"{n:,}"
    load(page, f"/ui/experiments/{PROGRAM}")
    from ceap.experiments.uplift import uplift_report
    report = uplift_report(store, "acme", PROGRAM, utcnow(), by="score_decile")
    for arm, a in report.arms.items():
        assert page.locator(f'tr[data-arm="{arm}"] td.customers').inner_text() == f"{a.customers:,}"
        assert page.locator(f'tr[data-arm="{arm}"] td.rate').inner_text() == f"{a.rate:.2%}"
    page.context.close()


def test_an_admin_action_in_the_page_changes_the_store_and_the_audit_log(chromium: Any,
                                                       site: tuple[str, Store, Scene]) -> None:
    base, store, scene = site
    target = scene.held["acme"][-1]
    page = signed_in(chromium, base, scene.keys["acme"], ADMIN)
    watch = Watch(page)
    load(page, "/ui/deliveries")
    page.check(f'#held input[value="{target}"]')
    page.select_option("#action", "drop")
    page.fill("#reason", "customer asked us by phone")
    page.click("#apply")
    page.wait_for_selector("#done")
    assert f"dropped (cancelled): {target}" in page.locator("#done").inner_text()
    assert page.locator(f'#held input[value="{target}"]').count() == 0
    [d] = [d for d in Outbox(store, "t").deliveries("acme") if d.id == target]
    assert (d.status, d.ambiguity, d.last_error) == ("cancelled", "dropped",
                                                     "dropped by hand: customer asked us by phone")
    [entry] = audit.query(store, "acme", target=f"delivery:{target}")
    [key] = [k for k in list_keys(store, "acme") if k.name == "acme-ops"]
    assert (entry.action, entry.actor, entry.source) == ("delivery.drop", f"apikey:{key.id}", "127.0.0.1")
    assert entry.detail["reason"] == "customer asked us by phone"
    dead = scene.dead["acme"][-1]  # a dead one, through the same form
    page.check(f'#dead input[value="{dead}"]')
    page.select_option("#action", "resend")
    page.fill("#reason", "provider is back")
    page.click("#apply")
    page.wait_for_selector("#done")
    assert f"requeued for sending: {dead}" in page.locator("#done").inner_text()
    assert page.locator(f'#dead input[value="{dead}"]').count() == 0
    [d] = [d for d in Outbox(store, "t").deliveries("acme") if d.id == dead]
    assert (d.status, d.attempts) == ("queued", 0)
    [entry] = audit.query(store, "acme", target=f"delivery:{dead}")
    assert (entry.action, entry.detail["reason"], entry.detail["was"]) == ("delivery.resend",
                                                                           "provider is back", "dead")
    assert watch.problems == []
    page.context.close()


def test_a_tenants_key_does_not_reach_another_tenants_pages(chromium: Any,
                                                            site: tuple[str, Store, Scene]) -> None:
    base, store, scene = site
    page = signed_in(chromium, base, scene.keys["globex"])
    acme_run = store.runs("acme", PROGRAM, 1)[0].run_id
    response = page.goto(f"/ui/programs/{PROGRAM}?run={acme_run}")
    assert response is not None and response.status == 404
    load(page, "/ui/deliveries")
    shown = {int(v) for v in page.locator("#held input").evaluate_all("els => els.map(e => e.value)")}
    assert shown == set(scene.held["globex"])
    page.context.close()


def test_screenshots_of_the_main_pages(chromium: Any, site: tuple[str, Store, Scene],
                                       tmp_path: Path) -> None:
    """What ``make screenshots`` writes to docs/img (here to a temporary folder)."""
    from tests.ui_screenshots import shoot

    base, _, scene = site
    written = shoot(chromium, base, scene.keys["acme"], tmp_path, scene.customer, ADMIN)
    assert len(written) == 5 and all(p.stat().st_size > 10_000 for p in written)

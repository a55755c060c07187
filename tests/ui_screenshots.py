"""Screenshots of the dashboard's main pages, for docs/img (``make screenshots``): a
store filled by ``tests.ui_helpers.populate``, served on a free port, shot in Debian's
Chromium.

    python -m tests.ui_screenshots docs/img
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

PAGES = {"dashboard-programs.png": "/ui/programs/win_back",
         "dashboard-customer.png": "/ui/customers/{customer}",
         "dashboard-deliveries.png": "/ui/deliveries",
         "dashboard-experiments.png": "/ui/experiments/win_back",
         "dashboard-realtime.png": "/ui/realtime"}


def shoot(chromium: Any, base: str, key: str, folder: Path, customer: str,
          admin: str = "") -> list[Path]:
    context = chromium.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/ui/login")
    page.fill("#key", key)
    if admin:  # the deliveries page then shows the admin actions
        page.fill("#admin_key", admin)
    page.click("#sign-in")
    page.wait_for_url("**/ui/programs")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in PAGES.items():
        page.goto(path.format(customer=customer))
        page.wait_for_function("() => [...document.querySelectorAll('div.chart')]"
                               ".every(c => c.dataset.rendered === 'true')", timeout=15_000)
        target = folder / name
        page.screenshot(path=str(target), full_page=True)
        written.append(target)
    context.close()
    return written


def main(out: str) -> None:
    from ceap.api import create_app
    from ceap.model import utcnow
    from ceap.store import open_store
    from tests.ui_helpers import populate
    from tests.ui_server import browser, chromium_missing, serving

    missing = chromium_missing()
    if missing:
        sys.exit(missing)
    os.environ["CEAP_ADMIN_KEY"] = admin = "screenshots"
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'ceap.db'}")
        scene = populate(store, Path(tmp), utcnow())
        with serving(create_app(store, programs=scene.programs)) as base, browser() as chromium:
            for path in shoot(chromium, base, scene.keys["acme"], Path(out), scene.customer, admin):
                print(path)
        store.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/img")

"""The API explorer at /docs works without internet: Swagger UI's files come from the package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.api.explorer import ASSETS
from ceap.store import open_store


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    store = open_store(sqlite_url)
    try:
        yield TestClient(create_app(store, auth=True))
    finally:
        store.close()


def test_docs_reference_no_outside_url_and_every_asset_is_served(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert not re.search(r"(?:https?:)?//", page.text.replace("window.location.origin", "")), page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {a.rsplit("/", 1)[-1] for a in assets} == {"swagger-ui-bundle.js", "swagger-ui.css",
                                                      "favicon-32x32.png"}
    for url in assets:
        served = client.get(url)
        assert served.status_code == 200, url
        assert served.content == (ASSETS / url.rsplit("/", 1)[-1]).read_bytes()
    assert "'/openapi.json'" in page.text and client.get("/openapi.json").status_code == 200
    assert '"validatorUrl": null' in page.text  # no badge fetched from the online validator


def test_the_explorer_needs_no_api_key_and_is_not_in_the_description(client: TestClient) -> None:
    assert client.get("/docs/oauth2-redirect").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith("/docs") for p in paths)
    assert client.get("/redoc").status_code == 404  # it would load ReDoc from a CDN


def test_swagger_ui_ships_with_its_licence() -> None:
    assert "Apache License" in (ASSETS / "LICENSE").read_text()[:300]
    assert "SmartBear" in (ASSETS / "NOTICE").read_text()
    version = (ASSETS / "VERSION").read_text().strip()
    assert re.fullmatch(r"5\.\d+\.\d+", version)  # Swagger UI 5 renders OpenAPI 3.1 (FastAPI's)
    assert Path(ASSETS / "swagger-ui-bundle.js").stat().st_size > 500_000

"""The API explorer at ``/docs``: Swagger UI served from this package, so it works where
the server has no internet (FastAPI's default loads it from a public CDN).

The files under ``static/swagger-ui/`` are Swagger UI's distribution (``swagger-ui-dist``
on npm, version in ``VERSION``), unchanged, with its Apache-2.0 licence and notice.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).parent / "static" / "swagger-ui"
#: where the assets are served
ASSETS_URL = "/docs/assets"


def install(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve the explorer at ``docs_url`` and its assets under ``ASSETS_URL``. Build the app
    with ``docs_url=None`` and ``redoc_url=None`` (ReDoc would load from a CDN too)."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect = f"{docs_url}/oauth2-redirect"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="swagger-ui")

    @app.get(docs_url, include_in_schema=False)
    def explorer() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} API", oauth2_redirect_url=redirect,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            # no badge from the public online validator
            swagger_ui_parameters={"validatorUrl": None})

    @app.get(redirect, include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

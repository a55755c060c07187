"""The dashboard, served by ``ceap serve`` under ``/ui``: server-rendered pages (Jinja2)
over the same store as the API, one tenant per signed-in API key, every asset served
from this package (see docs/dashboard.md)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ceap.store.base import Store
from ceap.ui.catalog import Catalog
from ceap.ui.session import Sessions
from ceap.ui.web import HERE, PREFIX, NeedSignIn, UiState, error_page, sign_in_redirect

__all__ = ["install"]


def install(app: FastAPI, store: Store, *, auth: bool = True, default_tenant: str = "default",
            programs: Path | None = None, default_tz: str = "UTC", secret: str | None = None) -> None:
    """Serve the dashboard on ``app`` under ``/ui``; ``programs`` is the programs folder
    (modes, schedules, experiments are read from its files)."""
    from ceap.ui import pages_insight, pages_ops

    app.state.ui = UiState(store, Catalog(programs), Sessions(secret), auth, default_tenant,
                           default_tz)
    app.add_exception_handler(NeedSignIn, sign_in_redirect)
    api_errors = app.exception_handlers.get(StarletteHTTPException)
    app.add_exception_handler(StarletteHTTPException, error_page(api_errors))  # type: ignore[arg-type]
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(pages_ops.router)
    app.include_router(pages_insight.router)

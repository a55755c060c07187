"""The dashboard's plumbing: templates, filters, the signed-in session of a request."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from ceap.store.base import Store
from ceap.ui.cache import Kept
from ceap.ui.catalog import Catalog
from ceap.ui.session import COOKIE, Session, Sessions

HERE = Path(__file__).parent
PREFIX = "/ui"


class NeedSignIn(Exception):
    """The request has no valid session: the answer is the sign-in page."""

    def __init__(self, path: str):
        self.path = path


@dataclass
class UiState:
    store: Store
    catalog: Catalog
    sessions: Sessions
    auth: bool
    default_tenant: str
    default_tz: str = "UTC"
    env: Environment = field(init=False)
    #: uplift reports, kept while their inputs are unchanged (``ceap.ui.cache``)
    reports: Kept = field(default_factory=Kept)

    def __post_init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(["html"]), trim_blocks=True,
                               lstrip_blocks=True)
        self.env.filters.update(when=when, pct=pct, num=num, signed_pct=signed_pct, ci=ci,
                                spec=spec_json, score=score)
        self.env.globals["prefix"] = PREFIX


def ui_state(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


def current_session(request: Request) -> Session:
    """The request's session; with ``auth`` off, the default tenant's (admin only after
    signing in with the admin key)."""
    ui = ui_state(request)
    session = ui.sessions.load(request.cookies.get(COOKIE))
    if session is not None and (ui.auth or session.tenant == ui.default_tenant):
        return session
    if not ui.auth:
        return ui.sessions.open_session(ui.default_tenant)
    raise NeedSignIn(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


def sign_in_redirect(request: Request, exc: Exception) -> Response:
    path = exc.path if isinstance(exc, NeedSignIn) else PREFIX
    return RedirectResponse(f"{PREFIX}/login?next={quote(path, safe='')}", status_code=303)


def error_page(fallback: Any) -> Any:
    """An HTTP error of a dashboard page as a page (the API's errors stay JSON)."""

    async def handle(request: Request, exc: StarletteHTTPException) -> Response:
        if not request.url.path.startswith(PREFIX + "/") or request.url.path.startswith(
                f"{PREFIX}/static/"):
            return await fallback(request, exc) if fallback else \
                Response(str(exc.detail), status_code=exc.status_code)
        ui = ui_state(request)
        session = ui.sessions.load(request.cookies.get(COOKIE))
        return render(request, "error.html", session, status=exc.status_code,
                      error=str(exc.detail), code=exc.status_code)

    return handle


def render(request: Request, template: str, session: Session | None, status: int = 200,
           **context: Any) -> HTMLResponse:
    ui = ui_state(request)
    html = ui.env.get_template(template).render(session=session, auth=ui.auth, request=request,
                                                **context)
    return HTMLResponse(html, status_code=status)


async def form_data(request: Request) -> dict[str, list[str]]:
    """An url-encoded form (what the dashboard's forms post)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qs(body, keep_blank_values=True)


def page_number(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 100_000))
    except ValueError:
        return 1


# --- filters ---------------------------------------------------------------------------------

def when(value: datetime | None, seconds: bool = False) -> str:
    if value is None:
        return "-"
    text = value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    zone = value.strftime("%Z") or "UTC"
    return f"{text} {zone}"


def pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def signed_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2%}"


def ci(value: tuple[float, float] | list[float] | None, sign: bool = True) -> str:
    if value is None:
        return "-"
    fmt = signed_pct if sign else pct
    return f"[{fmt(value[0])}, {fmt(value[1])}]"


def num(value: int | float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def spec_json(spec: dict[str, Any]) -> Markup:
    """A Vega-Lite spec for a ``<script type="application/json">`` block."""
    text = json.dumps(spec, separators=(",", ":"), default=str)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))

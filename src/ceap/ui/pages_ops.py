"""Sign-in, and the pages of operations: programs (with a run's funnel), deliveries
(with the admin actions on held and dead ones) and the real-time path."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from ceap.charts import deliveries_over_time, events_per_minute, funnel_chart
from ceap.delivery.held import ResolveError
from ceap.model import RunRecord, utcnow
from ceap.pipeline.funnel import Funnel
from ceap.runtime.schedule_book import ScheduleBook
from ceap.runtime.scheduler import next_runs
from ceap.spec import ProgramSpec
from ceap.store.sql_common import RUN_COLUMNS, run_from_row
from ceap.ui import queries
from ceap.ui.admin import admin_action
from ceap.ui.session import COOKIE, MAX_AGE, Session
from ceap.ui.web import PREFIX, current_session, form_data, page_number, render, ui_state

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SessionDep = Annotated[Session, Depends(current_session)]


def _safe_next(value: str | None) -> str:
    """Only a path of the dashboard (no open redirect)."""
    return value if value and value.startswith(PREFIX + "/") and "//" not in value else \
        f"{PREFIX}/programs"


@router.get("")
def home() -> Response:
    return RedirectResponse(f"{PREFIX}/programs", status_code=303)


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", None, next=_safe_next(next))


@router.post("/login")
async def login(request: Request) -> Response:
    ui = ui_state(request)
    form = await form_data(request)
    key, admin_key = form.get("key", [""])[0], form.get("admin_key", [""])[0]
    target = _safe_next(form.get("next", [""])[0])
    if ui.auth:
        session = ui.sessions.sign_in(ui.store, key, admin_key)
    else:
        session = ui.sessions.open_session(ui.default_tenant, admin_key)
    if session is None:
        return render(request, "login.html", None, status=401, next=target,
                      error="unknown API key (make one with `ceap apikey create NAME`)")
    if admin_key and not session.admin:
        return render(request, "login.html", None, status=401, next=target,
                      error="wrong admin key (the server's CEAP_ADMIN_KEY)")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, ui.sessions.dump(session), max_age=MAX_AGE, httponly=True,
                        samesite="strict", path=PREFIX, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


# --- programs --------------------------------------------------------------------------------

def _kind(spec: ProgramSpec | None) -> str:
    if spec is None:
        return "-"
    return "real-time" if getattr(spec.source, "type", None) == "events" else "batch"


@router.get("/programs")
def programs(request: Request, session: SessionDep) -> Response:
    ui = ui_state(request)
    specs = ui.catalog.specs()
    runs = queries.run_programs(ui.store, session.tenant)
    counts = queries.candidate_counts(ui.store, session.tenant)
    states = ScheduleBook(ui.store, session.tenant).states()
    now = utcnow()
    rows = []
    for name in sorted({*specs, *runs, *counts}):
        spec = specs.get(name)
        state = states.get(name)
        upcoming = next_runs(spec, state, ui.default_tz, now, 1) if spec else []
        rows.append({"name": name, "spec": spec, "kind": _kind(spec),
                     "mode": spec.mode if spec else "(no file)",
                     "schedule": spec.schedule.cron if spec and spec.schedule else None,
                     "timezone": (spec.schedule.timezone or ui.default_tz)
                     if spec and spec.schedule else None,
                     "next": upcoming[0] if upcoming else None,
                     "last_status": state.last_status if state else None,
                     "runs": runs.get(name, (0, None))[0], "last_run": runs.get(name, (0, None))[1],
                     "candidates": counts.get(name, {})})
    return render(request, "programs.html", session, rows=rows, broken=ui.catalog.broken())


def _runs(request: Request, tenant: str, program: str, page: int) -> queries.Page[RunRecord]:
    ui = ui_state(request)
    with ui.store.tx() as tx:
        found = tx.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE tenant_id = ? AND "
                           "program = ? ORDER BY started_at DESC LIMIT ? OFFSET ?",
                           (tenant, program, queries.PAGE_SIZE + 1,
                            (page - 1) * queries.PAGE_SIZE)).fetchall()
    return queries.Page([run_from_row(r) for r in found[:queries.PAGE_SIZE]], page,
                        len(found) > queries.PAGE_SIZE)


def _run(request: Request, tenant: str, run_id: str) -> RunRecord | None:
    with ui_state(request).store.tx() as tx:
        row = tx.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE tenant_id = ? AND run_id = ?",
                         (tenant, run_id)).fetchone()
    return run_from_row(row) if row else None


@router.get("/programs/{program}")
def program_page(request: Request, program: str, session: SessionDep, run: str | None = None,
                 page: str | None = None) -> Response:
    ui = ui_state(request)
    spec = ui.catalog.specs().get(program)
    runs = _runs(request, session.tenant, program, page_number(page))
    if spec is None and not runs.rows and runs.number == 1:
        raise HTTPException(404, f"no program {program!r} for tenant {session.tenant!r}")
    chosen = _run(request, session.tenant, run) if run else (runs.rows[0] if runs.rows else None)
    if run and chosen is None:
        raise HTTPException(404, f"no run {run!r} of tenant {session.tenant!r}")
    funnel = Funnel.from_dict(chosen.funnel) if chosen else None
    state = ScheduleBook(ui.store, session.tenant).state(program)
    upcoming = next_runs(spec, state, ui.default_tz, utcnow(), 3) if spec else []
    return render(request, "program.html", session, program=program, spec=spec, kind=_kind(spec),
                  runs=runs, run=chosen, funnel=funnel, state=state, upcoming=upcoming,
                  figure=funnel_chart(program, funnel, chosen.run_id) if funnel and chosen else None,
                  quarantined=queries.quarantined(ui.store, session.tenant, chosen.run_id)
                  if chosen and funnel and funnel.quarantined else [])


# --- deliveries ------------------------------------------------------------------------------

def _delivery_context(request: Request, session: Session, held_page: str | None,
                      dead_page: str | None) -> dict[str, Any]:
    ui = ui_state(request)
    days = queries.delivery_days(ui.store, session.tenant)
    totals: dict[str, dict[str, int]] = {}
    for _, channel, status, n in days:
        totals.setdefault(channel, {}).setdefault(status, 0)
        totals[channel][status] += n
    statuses = sorted({s for by in totals.values() for s in by})
    return {"figure": deliveries_over_time(days) if days else None, "totals": totals,
            "statuses": statuses,
            "held": queries.deliveries_by(ui.store, session.tenant, ["ambiguous"],
                                          page_number(held_page)),
            "dead": queries.deliveries_by(ui.store, session.tenant, ["dead"], page_number(dead_page))}


@router.get("/deliveries")
def deliveries(request: Request, session: SessionDep, held_page: str | None = None,
               dead_page: str | None = None, done: str | None = None) -> Response:
    return render(request, "deliveries.html", session, done=done,
                  **_delivery_context(request, session, held_page, dead_page))


@router.post("/deliveries/resolve")
async def resolve_held(request: Request, session: SessionDep) -> Response:
    """An admin action on held or dead deliveries (resend, mark-sent, drop), with a reason."""
    form = await form_data(request)
    if form.get("csrf", [""])[0] != session.csrf:
        raise HTTPException(403, "the form is stale or from another site: reload the page")
    if not session.admin:
        raise HTTPException(403, "admin actions need an admin session (sign in with the admin key)")
    try:
        ids = [int(i) for i in form.get("id", [])]
    except ValueError:
        raise HTTPException(400, "delivery ids must be whole numbers") from None
    try:
        result = admin_action(ui_state(request).store, session.tenant, session.actor,
                              form.get("action", [""])[0], ids, form.get("reason", [""])[0], utcnow(),
                              source=request.client.host if request.client else None)
    except ResolveError as exc:
        return render(request, "deliveries.html", session, status=400, error=str(exc),
                      **_delivery_context(request, session, None, None))
    return RedirectResponse(f"{PREFIX}/deliveries?done={quote(result.message)}", status_code=303)


# --- real time -------------------------------------------------------------------------------

@router.get("/realtime")
def realtime(request: Request, session: SessionDep, page: str | None = None) -> Response:
    ui = ui_state(request)
    now = utcnow()
    streams, workers = queries.stream_backlog(ui.store)
    from ceap.realtime.status import worker_reports

    reports = worker_reports(ui.store, session.tenant)
    events, last_event, timers = queries.event_totals(ui.store, session.tenant)
    since = (last_event or now) - timedelta(hours=1)
    minutes = queries.event_rate(ui.store, session.tenant, since)
    rate = sum(n for _, n in minutes[-5:]) / (60 * min(5, len(minutes))) if minutes else None
    specs = [s for s in ui.catalog.specs().values() if _kind(s) == "real-time"]
    runs = queries.run_programs(ui.store, session.tenant)
    return render(request, "realtime.html", session, now=now, streams=streams, workers=workers,
                  reports=reports,
                  events=events, last_event=last_event, timers=timers, rate=rate,
                  figure=events_per_minute(minutes) if minutes else None,
                  programs=[(s, runs.get(s.name, (0, None))) for s in specs],
                  dead=queries.dead_letters(ui.store, session.tenant, page_number(page)))

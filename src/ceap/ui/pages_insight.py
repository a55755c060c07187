"""The pages about customers and experiments: one customer's candidates, deliveries,
engagement, conversions and consent; uplift, bandit shares, guardrails, the shadow report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from ceap.delivery.consent_store import consent_history
from ceap.delivery.shadow_report import shadow_report
from ceap.experiments.bandit import bandit_history
from ceap.experiments.charts import bandit_shares, uplift_figure
from ceap.experiments.uplift import BY_CHOICES, uplift_report
from ceap.model import utcnow
from ceap.ui import queries
from ceap.ui.cache import outcome_fingerprint
from ceap.ui.session import Session
from ceap.ui.web import PREFIX, current_session, page_number, render, ui_state

router = APIRouter(prefix=PREFIX, include_in_schema=False)
SessionDep = Annotated[Session, Depends(current_session)]


@router.get("/customers")
def customers(request: Request, session: SessionDep, q: str = "", page: str | None = None) -> Response:
    ui = ui_state(request)
    found = queries.find_customers(ui.store, session.tenant, q.strip(), page_number(page))
    return render(request, "customers.html", session, q=q.strip(), found=found)


@router.get("/customers/{customer}")
def customer(request: Request, customer: str, session: SessionDep, page: str | None = None,
             delivery_page: str | None = None) -> Response:
    ui = ui_state(request)
    store, tenant = ui.store, session.tenant
    candidates = queries.customer_candidates(store, tenant, customer, page_number(page))
    deliveries, events = queries.customer_deliveries(store, tenant, customer,
                                                     page_number(delivery_page))
    engagements = queries.customer_engagements(store, tenant, customer)
    conversions = queries.customer_conversions(store, tenant, customer)
    consent = queries.customer_consent(store, tenant, customer)
    history = consent_history(store, tenant, customer)
    if not (candidates.rows or deliveries.rows or engagements or conversions or consent or history) \
            and candidates.number == 1 and deliveries.number == 1:
        raise HTTPException(404, f"no customer {customer!r} for tenant {tenant!r}")
    return render(request, "customer.html", session, customer=customer, candidates=candidates,
                  deliveries=deliveries, events=events, engagements=engagements,
                  conversions=conversions, consent=consent, history=history)


@router.get("/experiments")
def experiments(request: Request, session: SessionDep) -> Response:
    ui = ui_state(request)
    specs = ui.catalog.specs()
    bandits = queries.bandit_programs(ui.store, session.tenant)
    rows = [{"program": p, "treated": t, "control": c, "variants": v, "bandit": p in bandits,
             "spec": specs.get(p)} for p, t, c, v in queries.experiment_programs(ui.store, session.tenant)]
    shadows = shadow_report(ui.store, session.tenant, samples=5)
    return render(request, "experiments.html", session, rows=rows, shadows=shadows)


@router.get("/experiments/{program}")
def experiment(request: Request, program: str, session: SessionDep,
               by: str = "score_decile") -> Response:
    """The uplift report of ``ceap report uplift PROGRAM --by BY`` (as attributed so far:
    ``ceap experiments update`` attributes new outcomes), its figure, and the bandit's shares."""
    if by not in BY_CHOICES:
        raise HTTPException(422, f"by: expected one of {', '.join(BY_CHOICES)}, got {by!r}")
    ui = ui_state(request)
    spec = ui.catalog.specs().get(program)
    guardrails = spec.experiment.guardrails if spec else None
    bandit = bool(spec and spec.experiment.bandit)
    key = (session.tenant, program, by, guardrails.model_dump_json() if guardrails else None, bandit,
           outcome_fingerprint(ui.store, session.tenant, program))
    report = ui.reports.get(key, lambda: uplift_report(ui.store, session.tenant, program, utcnow(),
                                                       by=by, guardrails=guardrails, bandit=bandit))
    if not report.candidates and spec is None:
        raise HTTPException(404, f"no program {program!r} for tenant {session.tenant!r}")
    history = bandit_history(ui.store, session.tenant, program)
    figure = uplift_figure(program, report.arms, report.groups, report.by, report.comparisons)
    return render(request, "experiment.html", session, program=program, report=report, by=by,
                  choices=BY_CHOICES, figure=figure, history=history[-20:],
                  bandit=bandit_shares(program, [(s.at, s.variant, s.share) for s in history])
                  if history else None)

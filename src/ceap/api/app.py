"""The FastAPI application.

Every request is scoped to the tenant of its API key (``Authorization: Bearer
<key>``); with ``auth=False`` (local demos) every request is the default tenant.
"""

import json
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Response

from ceap.api import admin, callbacks, errors, explorer, preferences, tracking
from ceap.api.ingest import BODY_MODELS, ingest_router
from ceap.api.schemas import (
    BatchRequest,
    CandidateOut,
    Health,
    InboxItemOut,
    Marked,
    MarkRead,
    PathText,
    QueryText,
    responses,
    with_components,
)
from ceap.api.security import declare_scopes, tenant_dependency
from ceap.model import DEFAULT_TENANT, Candidate, CandidateQuery
from ceap.outcomes.engagement import mark_inbox_read
from ceap.store.base import Store

_FIELDS = ("id", "program", "customer_id", "subject_id", "action_type", "channels", "score",
           "priority", "model", "payload", "context", "status")


def plain(c: Candidate) -> dict[str, Any]:
    """A candidate as the API shows it (``CandidateOut``'s fields), without a model round trip."""
    data = {name: getattr(c, name) for name in _FIELDS}
    data["not_before"], data["expires_at"] = c.not_before.isoformat(), c.expires_at.isoformat()
    return data


def json_response(data: Any) -> Response:
    """Serialize once: the hot read endpoints skip re-validating their own output."""
    return Response(json.dumps(data, separators=(",", ":")), media_type="application/json")


def create_app(store: Store, *, auth: bool = True, ingest: Any = None,
               default_tenant: str = DEFAULT_TENANT) -> FastAPI:
    """The API over ``store``. The store must be safe to share between threads
    (both built-in stores are)."""
    app = FastAPI(title="CEAP", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Candidates for client apps, the in-app inbox, event ingest, callbacks.")
    errors.install(app)
    explorer.install(app)  # /docs, with Swagger UI's files served from the package

    app.state.store, app.state.auth, app.state.ingest = store, auth, ingest
    app.state.default_tenant = default_tenant
    Tenant = Annotated[str, Depends(tenant_dependency(auth, "read"))]
    ingest_tenant = tenant_dependency(auth, "ingest")
    keyed = (401, 403) if auth else ()

    @app.get("/v1/customers/{customer_id}/candidates", response_model=list[CandidateOut],
             responses=responses(*keyed, 422))
    async def customer_candidates(customer_id: PathText, tenant_id: Tenant, channel: QueryText = None,
                                  program: QueryText = None,
                                  limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[CandidateOut]:
        """A customer's current candidates, best first (priority, then score)."""
        found = store.candidates(CandidateQuery(tenant_id=tenant_id, customer_id=customer_id,
                                                channel=channel, program=program, limit=limit,
                                                servable=True))
        return json_response([plain(c) for c in found])  # type: ignore[return-value]

    @app.post("/v1/candidates:batch", response_model=dict[str, list[CandidateOut]],
              responses=responses(400, *keyed, 422))
    async def batch_candidates(body: BatchRequest, tenant_id: Tenant) -> dict[str, list[CandidateOut]]:
        """Current candidates of many customers in one request; every customer asked
        for is in the answer, with an empty list when there is nothing."""
        found = store.candidates(CandidateQuery(
            tenant_id=tenant_id, customer_ids=tuple(dict.fromkeys(body.customer_ids)),
            channel=body.channel, program=body.program, servable=True,
            limit=body.limit * len(body.customer_ids)))
        out: dict[str, list[dict[str, Any]]] = {c: [] for c in body.customer_ids}
        for c in found:
            if len(out[c.customer_id]) < body.limit:
                out[c.customer_id].append(plain(c))
        return json_response(out)  # type: ignore[return-value]

    @app.get("/v1/customers/{customer_id}/inbox", response_model=list[InboxItemOut],
             responses=responses(*keyed, 422))
    def inbox(customer_id: PathText, tenant_id: Tenant, unread: bool = False) -> list[InboxItemOut]:
        """What the in-app channel delivered to a customer, newest first."""
        items = store.inbox_list(tenant_id, customer_id, unread_only=unread)
        return [InboxItemOut(id=i.id or 0, program=i.program, title=i.title, body=i.body,
                             payload=i.payload,
                             created_at=i.created_at.isoformat() if i.created_at else "",
                             read=i.read_at is not None) for i in items]

    @app.post("/v1/customers/{customer_id}/inbox/read", response_model=Marked,
              responses=responses(400, *keyed, 422))
    def mark_read(customer_id: PathText, body: MarkRead, tenant_id: Tenant) -> Marked:
        """Mark inbox messages read; ``marked`` counts those that changed. Each is recorded
        as a ``read`` engagement of its delivery."""
        return Marked(marked=mark_inbox_read(store, tenant_id, customer_id, body.ids))

    app.include_router(ingest_router(ingest_tenant, auth))
    with_components(app, *BODY_MODELS)
    app.include_router(callbacks.router(signed=auth or bool(os.environ.get(callbacks.TWILIO_TOKEN_ENV))))
    app.include_router(callbacks.receipts_router(ingest_tenant, auth))
    app.include_router(tracking.router)
    app.include_router(tracking.engagements_router(ingest_tenant, auth))
    app.include_router(preferences.router())
    app.include_router(admin.router(tenant_dependency(auth, "admin"), auth))
    declare_scopes(app)

    @app.get("/healthz", response_model=Health)
    def health() -> Health:
        """Liveness."""
        return Health(status="ok")

    return app

"""The FastAPI application.

Every request is scoped to the tenant of its API key (``Authorization: Bearer
<key>``); with ``auth=False`` (local demos) every request is the default tenant.
"""

import json
import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from ceap.api import callbacks, tracking
from ceap.api.auth import tenant_of
from ceap.api.ingest import ingest_router
from ceap.model import DEFAULT_TENANT, Candidate, CandidateQuery
from ceap.outcomes.engagement import mark_inbox_read
from ceap.store.base import Store


class CandidateOut(BaseModel):
    id: int
    program: str
    customer_id: str
    subject_id: str | None
    action_type: str
    channels: list[str]
    score: float
    priority: int
    model: str
    payload: dict[str, Any]
    context: dict[str, Any]
    status: str
    not_before: str
    expires_at: str

    @classmethod
    def of(cls, c: Candidate) -> "CandidateOut":
        return cls(**plain(c))


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


class BatchRequest(BaseModel):
    customer_ids: list[str] = Field(min_length=1, max_length=1000)
    channel: str | None = None
    program: str | None = None
    limit: int = Field(10, ge=1, le=100, description="per customer")


class InboxItemOut(BaseModel):
    id: int
    program: str
    title: str
    body: str
    payload: dict[str, Any]
    created_at: str
    read: bool


class MarkRead(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=1000)


def request_tenant(request: Request,
                   authorization: Annotated[str | None, Header()] = None) -> str:
    """The tenant of the request's API key (401 without a known key)."""
    if not request.app.state.auth:
        return str(request.app.state.default_tenant)
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(401, "missing API key (Authorization: Bearer <key>)")
    found: str | None = request.app.state.tenant_of(authorization[7:].strip())
    if found is None:
        raise HTTPException(401, "unknown API key")
    return found


Tenant = Annotated[str, Depends(request_tenant)]


class KeyCache:
    """Known keys for a minute: a new key works at once, a deleted one stops within a minute."""

    def __init__(self, store: Store, ttl: float = 60.0):
        self.store, self.ttl = store, ttl
        self._known: dict[str, tuple[str, float]] = {}

    def __call__(self, key: str) -> str | None:
        hit = self._known.get(key)
        if hit and time.monotonic() - hit[1] < self.ttl:
            return hit[0]
        tenant = tenant_of(self.store, key)
        if tenant is None:
            self._known.pop(key, None)
        else:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[key] = (tenant, time.monotonic())
        return tenant


def create_app(store: Store, *, auth: bool = True, ingest: Any = None,
               default_tenant: str = DEFAULT_TENANT) -> FastAPI:
    """The API over ``store``. The store must be safe to share between threads
    (both built-in stores are)."""
    app = FastAPI(title="CEAP", version="0.1.0",
                  description="Candidates for client apps, the in-app inbox, callbacks.")

    app.state.store, app.state.auth, app.state.ingest = store, auth, ingest
    app.state.tenant_of = KeyCache(store)
    app.state.default_tenant = default_tenant

    @app.get("/v1/customers/{customer_id}/candidates", response_model=list[CandidateOut])
    async def customer_candidates(customer_id: str, tenant_id: Tenant, channel: str | None = None,
                            program: str | None = None,
                            limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[CandidateOut]:
        """A customer's current candidates, best first (priority, then score)."""
        found = store.candidates(CandidateQuery(tenant_id=tenant_id, customer_id=customer_id,
                                                channel=channel, program=program, limit=limit,
                                                servable=True))
        return json_response([plain(c) for c in found])  # type: ignore[return-value]

    @app.post("/v1/candidates:batch", response_model=dict[str, list[CandidateOut]])
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

    @app.get("/v1/customers/{customer_id}/inbox", response_model=list[InboxItemOut])
    def inbox(customer_id: str, tenant_id: Tenant, unread: bool = False) -> list[InboxItemOut]:
        items = store.inbox_list(tenant_id, customer_id, unread_only=unread)
        return [InboxItemOut(id=i.id or 0, program=i.program, title=i.title, body=i.body,
                             payload=i.payload,
                             created_at=i.created_at.isoformat() if i.created_at else "",
                             read=i.read_at is not None) for i in items]

    @app.post("/v1/customers/{customer_id}/inbox/read")
    def mark_read(customer_id: str, body: MarkRead, tenant_id: Tenant) -> dict[str, int]:
        """Mark messages read; each is recorded as a ``read`` engagement of its delivery."""
        return {"marked": mark_inbox_read(store, tenant_id, customer_id, body.ids)}

    app.include_router(ingest_router(request_tenant))
    app.include_router(callbacks.router)
    app.include_router(callbacks.receipts_router(request_tenant))
    app.include_router(tracking.router)
    app.include_router(tracking.engagements_router(request_tenant))

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app

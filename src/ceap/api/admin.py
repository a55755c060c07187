"""``/v1/admin``: what an operations dashboard calls, with an API key of scope ``admin``.

Held and dead deliveries (list, resend, mark sent, drop, with a reason), API keys (list,
revoke), the audit log, a customer's consent and its history, and a customer's export and
deletion. Every change is in the audit log with the key's id and the client's address."""


from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ceap import audit
from ceap.api.auth import ApiKeyError, list_keys, revoke_key
from ceap.api.schemas import Body, ErrorOut, PathText, QueryText, RowId, responses
from ceap.api.security import actor, client
from ceap.delivery.consent_store import consent_history, list_consent
from ceap.delivery.held import ResolveError, resolve
from ceap.delivery.outbox import Outbox
from ceap.json_input import Text
from ceap.privacy import delete_customer, export_customer


class DeliveryOut(BaseModel):
    id: int
    candidate_id: int
    program: str
    customer_id: str
    channel: str
    status: str
    attempts: int
    last_error: str | None
    created_at: str | None
    updated_at: str | None
    ambiguous_at: str | None
    ambiguity: str | None


class ResolveIn(Body):
    """Deliveries by ``ids``, or with ``all`` every one of the tenant in ``status``
    (narrowed by ``channel`` and ``program``); ``reason`` is required."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["ids"], "properties": {"ids": {"minItems": 1}, "all": {"const": False}}},
        {"required": ["all"], "properties": {"all": {"const": True}, "ids": {"maxItems": 0}}}]})

    ids: list[RowId] = Field(default_factory=list, max_length=1000)  # type: ignore[valid-type]
    all: bool = False
    status: Literal["ambiguous", "dead"] = "ambiguous"
    channel: Text | None = None
    program: Text | None = None
    reason: Text = Field(min_length=1, max_length=2000, pattern=r"\S")

    @model_validator(mode="after")
    def _one_way(self) -> "ResolveIn":
        if bool(self.ids) == self.all:
            raise ValueError("give ids or all: true (one of the two)")
        return self


class Resolved(BaseModel):
    resolved: int
    ids: list[int]


class ApiKeyOut(BaseModel):
    id: str
    name: str
    scopes: list[str]
    status: Literal["active", "expired", "revoked"]
    created_at: str
    expires_at: str | None
    revoked_at: str | None


class RevokeIn(Body):
    reason: Text | None = Field(None, max_length=2000)


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    target: str
    detail: Any
    source: str | None


class ConsentOut(BaseModel):
    channel: str
    topic: str
    granted: bool
    source: str | None
    updated_at: str | None


class ConsentChangeOut(BaseModel):
    channel: str
    topic: str
    old_granted: bool | None
    new_granted: bool
    source: str | None
    actor: str | None
    at: str | None


class CustomerConsentOut(BaseModel):
    current: list[ConsentOut]
    history: list[ConsentChangeOut]


class DeletionOut(BaseModel):
    customer_hash: str = Field(description="the tombstone kept in the deletion log: "
                                           "sha256(tenant NUL customer id)")
    deleted: dict[str, int]
    redacted: dict[str, int]
    rows: int


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _timed(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in data.items()}


def router(tenant_dependency: Any, auth: bool = True) -> APIRouter:
    api = APIRouter(prefix="/v1/admin", tags=["admin"])
    Tenant = Annotated[str, Depends(tenant_dependency)]
    keyed = (401, 403) if auth else ()

    @api.get("/deliveries", response_model=list[DeliveryOut], responses=responses(*keyed, 422))
    def deliveries(tenant_id: Tenant, request: Request,
                   status: Literal["ambiguous", "dead"] = "ambiguous",
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Held (``ambiguous``) or ``dead`` deliveries, newest first."""
        rows = Outbox(request.app.state.store, "api").deliveries(tenant_id, status=status, limit=limit)
        return [_timed({k: v for k, v in asdict(d).items() if k in DeliveryOut.model_fields}) for d in rows]

    def _resolver(action: Literal["resend", "mark-sent", "drop"]) -> Any:
        def handler(body: ResolveIn, tenant_id: Tenant, request: Request) -> Resolved:
            try:
                done = resolve(request.app.state.store, tenant_id, action, body.reason,
                               request.app.state.store.clock(), ids=body.ids, channel=body.channel,
                               program=body.program, status=body.status, actor=actor(request),
                               source=client(request))
            except ResolveError as exc:
                raise HTTPException(409, str(exc)) from None
            return Resolved(resolved=len(done), ids=[d.id for d in done])

        handler.__doc__ = {"resend": "Send again at the next dispatch pass (same idempotency key).",
                           "mark-sent": "Record as sent (the provider has them); nothing is sent.",
                           "drop": "End without sending (status cancelled)."}[action]
        return handler

    conflict = {"model": ErrorOut, "description": "An id is unknown, neither held nor dead, or a dead "
                                                  "delivery cannot be resent: nothing was changed"}
    for action in ("resend", "mark-sent", "drop"):
        api.add_api_route(f"/deliveries/{action}", _resolver(action), methods=["POST"],  # type: ignore[arg-type]
                          response_model=Resolved, name=f"deliveries_{action.replace('-', '_')}",
                          responses=responses(400, *keyed, 422, _409=conflict))

    @api.get("/apikeys", response_model=list[ApiKeyOut], responses=responses(*keyed))
    def apikeys(tenant_id: Tenant, request: Request) -> list[dict[str, Any]]:
        """The tenant's API keys (never the keys themselves)."""
        store = request.app.state.store
        now = store.clock()
        return [_timed({**asdict(k), "scopes": list(k.scopes), "status": k.status(now)})
                for k in list_keys(store, tenant_id)]

    @api.post("/apikeys/{key_id}/revoke", response_model=ApiKeyOut,
              responses=responses(400, *keyed, 404, 422))
    def revoke(key_id: PathText, body: RevokeIn, tenant_id: Tenant, request: Request) -> dict[str, Any]:
        """Revoke a key: refused from the next request on, on every server process."""
        store = request.app.state.store
        try:
            key = revoke_key(store, tenant_id, key_id, actor=actor(request), source=client(request),
                             reason=body.reason)
        except ApiKeyError as exc:
            raise HTTPException(404, str(exc)) from None
        [now] = [k for k in list_keys(store, tenant_id) if k.id == key.id]
        return _timed({**asdict(now), "scopes": list(now.scopes), "status": now.status(store.clock())})

    @api.get("/audit", response_model=list[AuditOut], responses=responses(*keyed, 422))
    def audit_log(tenant_id: Tenant, request: Request, action: QueryText = None, target: QueryText = None,
                  actor_: Annotated[str | None, Query(alias="actor", pattern="^[^\x00]*$")] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """The audit log, newest first (``action`` matches a prefix: ``consent``, ``delivery``...)."""
        entries = audit.query(request.app.state.store, tenant_id, action=action, target=target,
                              actor=actor_, limit=limit)
        return [_timed({k: v for k, v in asdict(e).items() if k != "tenant_id"}) for e in entries]

    @api.get("/customers/{customer_id}/consent", response_model=CustomerConsentOut,
             responses=responses(*keyed, 422))
    def customer_consent(customer_id: PathText, tenant_id: Tenant, request: Request) -> dict[str, Any]:
        """A customer's consent now, and every change of it (oldest first)."""
        store = request.app.state.store
        current = [_timed({k: v for k, v in asdict(r).items() if k in ConsentOut.model_fields})
                   for r in list_consent(store, tenant_id, customer_id)]
        history = [_timed({k: v for k, v in asdict(c).items() if k in ConsentChangeOut.model_fields})
                   for c in consent_history(store, tenant_id, customer_id)]
        return {"current": current, "history": history}

    @api.get("/customers/{customer_id}/export", response_model=dict[str, Any],
             responses=responses(*keyed, 422))
    def export(customer_id: PathText, tenant_id: Tenant, request: Request) -> dict[str, Any]:
        """Every row the store holds about a customer, by table (docs/privacy.md)."""
        return export_customer(request.app.state.store, tenant_id, customer_id, actor=actor(request),
                               source=client(request))

    @api.delete("/customers/{customer_id}", response_model=DeletionOut, responses=responses(*keyed, 422))
    def delete(customer_id: PathText, tenant_id: Tenant, request: Request,
               reason: QueryText = None) -> dict[str, Any]:
        """Delete everything about a customer at once, before answering; only a hashed
        tombstone stays, so later events and batch rows for them are dropped."""
        store = request.app.state.store
        report = delete_customer(store, tenant_id, customer_id, actor=actor(request),
                                 source=client(request), reason=reason)
        state_url = getattr(request.app.state, "state_url", None)
        if state_url:
            from ceap.privacy.redis_state import erase_redis_state

            report.deleted["redis_state"] = erase_redis_state(state_url, tenant_id, customer_id)
        return {"customer_hash": report.customer_hash, "deleted": report.deleted,
                "redacted": report.redacted, "rows": report.rows}

    return api

"""The FastAPI application.

Every request is scoped to the tenant of its API key (``Authorization: Bearer
<key>``); with ``auth=False`` (local demos) every request is the default tenant.
"""

import asyncio
import contextvars
import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Query, Response

from ceap.api import admin, callbacks, errors, explorer, hot, preferences, tracking
from ceap.api.ingest import BODY_MODELS, ingest_router
from ceap.api.schemas import (
    BatchRequest,
    CandidateOut,
    Health,
    InboxItemOut,
    JourneyEntryOut,
    Marked,
    MarkRead,
    PathText,
    QueryText,
    responses,
    with_components,
)
from ceap.api.security import declare_scopes, tenant_dependency
from ceap.journeys.state import customer_entries
from ceap.model import DEFAULT_TENANT, Candidate, CandidateQuery, InboxItem
from ceap.observability.asgi import install as instrument
from ceap.outcomes.engagement import mark_inbox_read
from ceap.store.base import Store

_FIELDS = ("id", "program", "customer_id", "subject_id", "action_type", "channels", "score",
           "priority", "model", "payload", "context", "status")


def plain(c: Candidate) -> dict[str, Any]:
    """A candidate as the API shows it (``CandidateOut``'s fields), without a model round trip."""
    data = {name: getattr(c, name) for name in _FIELDS}
    data["not_before"], data["expires_at"] = c.not_before.isoformat(), c.expires_at.isoformat()
    return data


def json_bytes(data: Any) -> bytes:
    """JSON, with orjson (the standard library for what orjson refuses)."""
    try:
        return orjson.dumps(data)
    except TypeError:  # what orjson refuses (an integer past 64 bits in a payload)
        return json.dumps(data, separators=(",", ":")).encode()


def json_response(data: Any) -> Response:
    """Serialize once: the hot read endpoints skip re-validating their own output (their
    ``response_model`` still documents it)."""
    return Response(json_bytes(data), media_type="application/json")


def inbox_plain(i: InboxItem) -> dict[str, Any]:
    """An inbox message as the API shows it (``InboxItemOut``'s fields)."""
    return {"id": i.id or 0, "idempotency_key": i.idempotency_key, "program": i.program,
            "title": i.title, "body": i.body, "payload": i.payload,
            "created_at": i.created_at.isoformat() if i.created_at else "", "read": i.read_at is not None}


#: threads serving a server store's reads (PostgreSQL: up to ``CEAP_PG_POOL_MAX`` = 10 of
#: them read at once, the others wait for a pooled connection)
READ_THREADS = 16

_HEALTHY = orjson.dumps({"status": "ok"})


def create_app(store: Store, *, auth: bool = True, ingest: Any = None,
               default_tenant: str = DEFAULT_TENANT, programs: Path | None = None,
               default_tz: str = "UTC") -> FastAPI:
    """The API over ``store``, and the dashboard under ``/ui`` (``programs``: the programs
    folder it describes; ``default_tz``: the scheduler's time zone). The store must be safe
    to share between threads (both built-in stores are).

    The hot reads (a customer's candidates, the inbox) run on the event loop: awaited
    when the store has ``serving_reads`` (PostgreSQL: async connections of their own),
    else in place on an embedded store (one indexed SQLite query, cheaper than a hop to
    the thread pool); on another server store (``Store.remote_reads``: DynamoDB
    candidates) in the read threads, so that waiting on it does not hold up other
    requests."""
    app = FastAPI(title="CEAP", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Candidates for client apps, the in-app inbox, event ingest, callbacks.")
    errors.install(app)
    instrument(app)  # request metrics and spans by route template, GET /metrics
    explorer.install(app)  # /docs, with Swagger UI's files served from the package

    app.state.store, app.state.auth, app.state.ingest = store, auth, ingest
    app.state.default_tenant = default_tenant
    remote = store.remote_reads
    readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="ceap-read") if remote else None

    async def read(func: Any, *args: Any, **kwargs: Any) -> Any:
        """A store read: in place on an embedded store; on a server's, in the app's read
        threads (asyncio's executor: about half the CPU of a hop through anyio's pool)."""
        if readers is None:
            return func(*args, **kwargs)
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(readers, call)

    if readers is not None:
        app.router.on_shutdown.append(functools.partial(readers.shutdown, wait=False))
    serving = store.serving_reads()

    async def candidates_body(tenant_id: str, customer_id: str, channel: str | None,
                              program: str | None, limit: int) -> bytes:
        """The JSON of a customer's servable candidates (both candidates routes)."""
        if serving is not None:
            return json_bytes(await serving.candidates(tenant_id, customer_id, channel, program, limit))
        return json_bytes([plain(c) for c in await read(store.candidates, CandidateQuery(
            tenant_id=tenant_id, customer_id=customer_id, channel=channel, program=program,
            limit=limit, servable=True))])

    async def inbox_body(tenant_id: str, customer_id: str, unread: bool) -> bytes:
        """The JSON of a customer's inbox (both inbox routes)."""
        if serving is not None:
            return json_bytes(await serving.inbox(tenant_id, customer_id, unread))
        items = await read(store.inbox_list, tenant_id, customer_id, unread_only=unread)
        return json_bytes([inbox_plain(i) for i in items])

    Tenant = Annotated[str, Depends(tenant_dependency(auth, "read"))]
    ingest_tenant = tenant_dependency(auth, "ingest")
    keyed = (401, 403) if auth else ()

    @app.get("/v1/customers/{customer_id}/candidates", response_model=list[CandidateOut],
             responses=responses(*keyed, 422))
    async def customer_candidates(customer_id: PathText, tenant_id: Tenant, channel: QueryText = None,
                                  program: QueryText = None,
                                  limit: Annotated[int, Query(ge=1, le=100)] = 10) -> list[CandidateOut]:
        """A customer's current candidates, best first (priority, then score)."""
        body = await candidates_body(tenant_id, customer_id, channel, program, limit)
        return Response(body, media_type="application/json")  # type: ignore[return-value]

    @app.post("/v1/candidates:batch", response_model=dict[str, list[CandidateOut]],
              responses=responses(400, *keyed, 422))
    async def batch_candidates(body: BatchRequest, tenant_id: Tenant) -> dict[str, list[CandidateOut]]:
        """Current candidates of many customers in one request; every customer asked
        for is in the answer, with an empty list when there is nothing."""
        found = await read(store.candidates, CandidateQuery(
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
    async def inbox(customer_id: PathText, tenant_id: Tenant,
                    unread: bool = False) -> list[InboxItemOut]:
        """What the in-app channel delivered to a customer, newest first."""
        body = await inbox_body(tenant_id, customer_id, unread)
        return Response(body, media_type="application/json")  # type: ignore[return-value]

    @app.post("/v1/customers/{customer_id}/inbox/read", response_model=Marked,
              responses=responses(400, *keyed, 422))
    def mark_read(customer_id: PathText, body: MarkRead, tenant_id: Tenant) -> Marked:
        """Mark inbox messages read; ``marked`` counts those that changed. Each is recorded
        as a ``read`` engagement of its delivery."""
        return Marked(marked=mark_inbox_read(store, tenant_id, customer_id, body.ids))

    @app.get("/v1/customers/{customer_id}/journeys", response_model=list[JourneyEntryOut],
             responses=responses(*keyed, 422))
    async def customer_journeys(customer_id: PathText, tenant_id: Tenant, program: QueryText = None,
                                limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[JourneyEntryOut]:
        """A customer's journey entries, newest first: where each stands, and each move on
        the way (docs/journeys.md)."""
        def load() -> list[dict[str, Any]]:
            with store.tx() as tx:
                return [e.plain() for e in customer_entries(tx, tenant_id, customer_id, program, limit)]

        return json_response(await read(load))  # type: ignore[return-value]

    async def candidates_answer(tenant_id: str, customer_id: str, query: dict[str, str]) -> bytes | None:
        limit = hot.limit_of(query.get("limit"), 10)
        if limit is None:
            return None
        return await candidates_body(tenant_id, customer_id, query.get("channel"),
                                     query.get("program"), limit)

    async def inbox_answer(tenant_id: str, customer_id: str, query: dict[str, str]) -> bytes | None:
        unread = hot.flag_of(query.get("unread"))
        return None if unread is None else await inbox_body(tenant_id, customer_id, unread)

    hot.install(app, {  # the same answers as the two routes above, with less work (ceap.api.hot)
        "/v1/customers/{customer_id}/candidates": (frozenset({"channel", "program", "limit"}),
                                                   candidates_answer),
        "/v1/customers/{customer_id}/inbox": (frozenset({"unread"}), inbox_answer),
    }, auth)

    app.include_router(ingest_router(ingest_tenant, auth))
    with_components(app, *BODY_MODELS)
    app.include_router(callbacks.router(signed=auth or bool(os.environ.get(callbacks.TWILIO_TOKEN_ENV))))
    app.include_router(callbacks.receipts_router(ingest_tenant, auth))
    app.include_router(tracking.router)
    app.include_router(tracking.engagements_router(ingest_tenant, auth))
    app.include_router(preferences.router())
    app.include_router(admin.router(tenant_dependency(auth, "admin"), auth))
    declare_scopes(app)

    from ceap.ui import install as install_dashboard  # ceap.ui imports ceap.api.auth

    install_dashboard(app, store, auth=auth, default_tenant=default_tenant, programs=programs,
                      default_tz=default_tz)

    @app.get("/healthz", response_model=Health)
    async def health() -> Health:
        """Liveness: a constant answer, touching nothing (also the serving benchmark's baseline)."""
        return Response(_HEALTHY, media_type="application/json")  # type: ignore[return-value]

    return app

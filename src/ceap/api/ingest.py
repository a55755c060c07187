"""HTTP ingest: single events, batches and EventBridge envelopes.

Each event is validated on its own: the accepted ones are appended to the
project's ingest stream in one write, the rejected ones come back with their
index and reason, and the answer says how many were accepted.
"""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from ceap.realtime.events import validate_events

MAX_EVENTS = 10_000


def ingest_router(tenant_dependency: Any) -> APIRouter:
    api = APIRouter()

    async def _accept(request: Request, tenant_id: str, envelope: bool) -> JSONResponse:
        stream = request.app.state.ingest
        if stream is None:
            raise HTTPException(503, "no ingest stream configured")
        try:
            data = json.loads(await request.body())
        except ValueError as exc:
            raise HTTPException(400, f"body is not JSON: {exc}") from None
        items = data if isinstance(data, list) else [data]
        if len(items) > MAX_EVENTS:
            raise HTTPException(413, f"at most {MAX_EVENTS} events per request")
        if envelope and any(not isinstance(i, dict) or "detail-type" not in i for i in items):
            raise HTTPException(400, "expected EventBridge envelopes (with 'detail-type')")
        table, rejected = validate_events(items, tenant_id)
        foreign = [i for i, t in enumerate(table.column("tenant_id").to_pylist()) if t != tenant_id]
        if foreign:  # an API key writes to its own tenant only
            raise HTTPException(403, "events name another tenant than the API key's")
        # queue the events as validated, stamped with the key's tenant
        accepted = [json.dumps({"id": e["event_id"], "type": e["type"], "ts": e["ts"].isoformat() + "Z",
                                "customer_id": e["customer_id"], "tenant_id": tenant_id,
                                "attributes": json.loads(e["attributes"])}).encode()
                    for e in table.to_pylist()]
        if accepted:
            stream.publish(accepted)
        return JSONResponse({"accepted": len(accepted),
                             "rejected": [{"index": i, "error": e} for i, e in rejected]},
                            status_code=202 if accepted or not items else 422)

    @api.post("/v1/events")
    async def events(request: Request,
                     tenant_id: Annotated[str, Depends(tenant_dependency)]) -> JSONResponse:
        """One event or a JSON list of events."""
        return await _accept(request, tenant_id, envelope=False)

    @api.post("/v1/events/eventbridge")
    async def eventbridge(request: Request,
                          tenant_id: Annotated[str, Depends(tenant_dependency)]) -> JSONResponse:
        """One EventBridge envelope or a list of them (``detail-type``, ``time``, ``detail``)."""
        return await _accept(request, tenant_id, envelope=True)

    return api

"""HTTP ingest: single events, batches and EventBridge envelopes.

Each event is validated on its own: the accepted ones are appended to the
project's ingest stream in one write, the rejected ones come back with their
index and reason, and the answer says how many were accepted. A body that cannot
be read at all (not JSON, not UTF-8, nested too deep) is a 400.
"""

import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from ceap.api.schemas import ErrorOut, IngestResult, responses
from ceap.json_input import loads
from ceap.realtime.events import EventBridgeEnvelope, EventIn, validate_events

MAX_EVENTS = 10_000


#: the models the request bodies refer to (``schemas.with_components`` lists them in /openapi.json)
BODY_MODELS = (EventIn, EventBridgeEnvelope)


def _body(*models: type) -> dict[str, Any]:
    """The OpenAPI ``requestBody``: one item or a list of them (the route reads raw JSON)."""
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    one = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"anyOf": [one, {"type": "array", "items": one, "maxItems": MAX_EVENTS}]}}}}}


_RESULTS = {"model": IngestResult, "description": "Every event was rejected (same body as 202)"}


def ingest_router(tenant_dependency: Callable[..., str], auth: bool = True) -> APIRouter:
    api = APIRouter()
    answers = responses(400, *((401, 403) if auth else (403,)), 413, 503, _422=_RESULTS,
                        _403={"model": ErrorOut, "description": "An event names another tenant "
                                                                "than the API key's, or the key "
                                                                "lacks the scope `ingest`"})

    async def _accept(request: Request, tenant_id: str, envelopes: bool) -> JSONResponse:
        stream = request.app.state.ingest
        if stream is None:
            raise HTTPException(503, "no ingest stream configured")
        try:
            data = loads(await request.body())
        except ValueError as exc:
            raise HTTPException(400, f"body is not JSON: {exc}") from None
        items = data if isinstance(data, list) else [data]
        if len(items) > MAX_EVENTS:
            raise HTTPException(413, f"at most {MAX_EVENTS} events per request")
        table, rejected = validate_events(items, tenant_id, envelopes=envelopes)
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

    @api.post("/v1/events", status_code=202, response_model=IngestResult, responses=answers,
              openapi_extra=_body(EventIn, EventBridgeEnvelope))
    async def events(request: Request,
                     tenant_id: Annotated[str, Depends(tenant_dependency)]) -> JSONResponse:
        """One event or a JSON list of events (EventBridge envelopes too)."""
        return await _accept(request, tenant_id, envelopes=False)

    @api.post("/v1/events/eventbridge", status_code=202, response_model=IngestResult,
              responses=answers, openapi_extra=_body(EventBridgeEnvelope))
    async def eventbridge(request: Request,
                          tenant_id: Annotated[str, Depends(tenant_dependency)]) -> JSONResponse:
        """One EventBridge envelope or a list of them (``detail-type``, ``time``, ``detail``)."""
        return await _accept(request, tenant_id, envelopes=True)

    return api

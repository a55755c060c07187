"""Outcome endpoints: the public open pixel and click links (signed tokens, no
API key), and reported engagements (API key). See docs/outcomes.md."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ceap.api.schemas import Body, PathText, RowId, responses
from ceap.json_input import Text
from ceap.model import utcnow
from ceap.outcomes.reported import Report, record_reports
from ceap.outcomes.track import TrackAnswer, click_answer, open_answer

_PAGE: dict[str, Any] = {"text/html": {}}
_OPEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a 1x1 transparent GIF, never cached", "content": {"image/gif": {}}},
    404: {"description": "not a genuine tracking token", "content": _PAGE},
    410: {"description": "the token has expired", "content": _PAGE},
    503: {"description": "tracking is not set up (no signing key)", "content": _PAGE},
}
_CLICK_RESPONSES: dict[int | str, dict[str, Any]] = {
    302: {"description": "redirect to the link's destination, as it was in the message",
          "headers": {"Location": {"schema": {"type": "string"}}}},
    404: {"description": "not a genuine tracking token, or an unknown link: no redirect",
          "content": _PAGE},
    410: {"description": "the link has expired: no redirect", "content": _PAGE},
    503: {"description": "tracking is not set up, or the store is unavailable", "content": _PAGE},
}


def _clock(request: Request) -> datetime:
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock is not None else utcnow()


def _response(answer: TrackAnswer, head: bool) -> Response:
    headers = dict(answer.headers)
    if answer.location is not None:
        headers["Location"] = answer.location
    return Response(b"" if head else answer.body, answer.status, headers=headers,
                    media_type=answer.content_type.split(";")[0])


def _kw(request: Request) -> dict[str, Any]:
    return {"now": _clock(request), "method": request.method,
            "config": getattr(request.app.state, "tracking", None)}


router = APIRouter(tags=["tracking"])


@router.head("/t/o/{token}", include_in_schema=False)
@router.get("/t/o/{token}", responses=_OPEN_RESPONSES, response_class=Response)
def open_pixel(token: PathText, request: Request) -> Response:
    """The open pixel of an HTML e-mail. The first GET records ``opened``; HEAD records nothing."""
    answer = open_answer(request.app.state.store, token, **_kw(request))
    return _response(answer, request.method == "HEAD")


@router.head("/t/c/{token}", include_in_schema=False)
@router.get("/t/c/{token}", responses=_CLICK_RESPONSES, response_class=Response, status_code=302)
def click(token: PathText, request: Request) -> Response:
    """A tracked link: redirects to the destination stored when the message was rendered,
    never elsewhere. The first GET of each link records ``clicked``; HEAD records nothing."""
    answer = click_answer(request.app.state.store, token, **_kw(request))
    return _response(answer, request.method == "HEAD")


def _iso_text(value: Any) -> Any:
    """A time given as ISO 8601 text (JSON has no time type; a number is refused)."""
    if not isinstance(value, str):
        raise ValueError("must be ISO 8601 text, e.g. 2026-12-06T10:00:00Z")
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


IsoTime = Annotated[datetime, BeforeValidator(_iso_text),
                    Field(json_schema_extra={"type": "string", "format": "date-time"})]

EngagementType = Literal["delivered", "bounced", "failed", "opened", "clicked", "read", "replied",
                         "unsubscribed", "complained"]


class EngagementIn(Body):
    """One engagement, of the delivery named by ``delivery_id`` or ``idempotency_key`` (one)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["delivery_id"], "not": {"required": ["idempotency_key"]}},
        {"required": ["idempotency_key"], "not": {"required": ["delivery_id"]}}]})

    # not nullable: a field given is a value (an omitted one stays None)
    delivery_id: RowId = None  # type: ignore[valid-type,assignment]
    idempotency_key: Text = Field(None, min_length=1, max_length=512)  # type: ignore[assignment]
    type: EngagementType
    ts: IsoTime | None = Field(None, description="when it happened, ISO 8601 (default: now)")
    url: Text | None = Field(None, max_length=4096, description="clicked: the destination")

    @model_validator(mode="after")
    def _one_id(self) -> "EngagementIn":
        if (self.delivery_id is None) == (self.idempotency_key is None):
            raise ValueError("give exactly one of delivery_id and idempotency_key")
        return self


class EngagementsOut(BaseModel):
    recorded: int = Field(description="new engagements (a repeated report is not recorded twice)")
    unknown: list[int] = Field(description="indexes of reports naming no delivery of this tenant")


def engagements_router(tenant_dependency: Any, auth: bool = True) -> APIRouter:
    """``POST /v1/engagements``: engagements a client app or a server saw (API key)."""
    api = APIRouter(tags=["tracking"])

    @api.post("/v1/engagements", response_model=EngagementsOut,
              responses=responses(400, *((401, 403) if auth else ()), 422))
    def engagements(body: Annotated[list[EngagementIn], Field(min_length=1, max_length=1000)],
                    request: Request,
                    tenant_id: Annotated[str, Depends(tenant_dependency)]) -> EngagementsOut:
        """Record opens, clicks, reads... that a client app saw, by delivery id or idempotency key."""
        now = _clock(request)
        reports = [Report(tenant_id, e.type, _utc(e.ts) if e.ts else now, e.delivery_id, e.idempotency_key,
                          e.url) for e in body]
        with request.app.state.store.tx() as tx:
            recorded, unknown = record_reports(tx, reports, "api", now)
        return EngagementsOut(recorded=recorded, unknown=unknown)

    return api


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

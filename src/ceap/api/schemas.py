"""What the API reads and answers, as pydantic models: they validate the requests and
make /openapi.json tell the truth about every status a route can answer."""

from typing import Annotated, Any

from fastapi import FastAPI, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ceap.json_input import JSON_VALUE_SCHEMA, NO_NUL, Text

#: a path or query parameter: any text but a NUL (which PostgreSQL cannot store)
PathText = Annotated[str, Path(pattern=NO_NUL)]
QueryText = Annotated[str | None, Query(pattern=NO_NUL)]


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` takes ``15.0``; a bool or a string stays what it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(low: int, high: int) -> Any:
    """An integer from ``low`` to ``high`` as JSON has it (under ``strict``: not ``true``,
    not ``"1"``; ``2.0`` is 2, as JSON Schema's ``integer`` says)."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_integral)]


#: a stored row's id: 1 to 2**53 - 1, what every JSON client reads exactly (far inside the
#: signed 64 bits of SQLite's INTEGER and PostgreSQL's BIGINT)
RowId = json_int(1, 2**53 - 1)


class Body(BaseModel):
    """A JSON request body: exact types (``true`` is not a number, ``"1"`` is not an id),
    no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


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


class JourneyStepOut(BaseModel):
    seq: int = Field(description="0 for the entry, then one per move")
    step: str = Field(description="the step it happened at")
    what: str = Field(description="entered, sent, event <type>, timeout, then, else, completed, exit: <why>")
    candidate_id: int | None = Field(description="the message a send step wrote (a candidate)")
    at: str = Field(description="when the tick recorded it (ISO 8601)")


class JourneyEntryOut(BaseModel):
    id: int
    program: str
    customer_id: str
    status: str = Field(description="active, completed or exited")
    step: str = Field(description="the current step (the last one when ended)")
    reason: str | None = Field(description="why it ended")
    version: str = Field(description="hash of the journey's steps when the customer entered")
    entered_at: str
    step_since: str = Field(description="when the current step began (a wait's window starts here)")
    ended_at: str | None
    history: list[JourneyStepOut]


class BatchRequest(Body):
    customer_ids: list[Text] = Field(min_length=1, max_length=1000)
    channel: Text | None = None
    program: Text | None = None
    limit: json_int(1, 100) = Field(10, description="per customer")  # type: ignore[valid-type]


class InboxItemOut(BaseModel):
    id: int = Field(description="the message's id in the inbox (what `inbox/read` takes)")
    idempotency_key: str = Field(description="its delivery's idempotency key: what `POST /v1/engagements` "
                                 "takes to report the card opened or clicked")
    program: str
    title: str
    body: str
    payload: dict[str, Any]
    created_at: str
    read: bool


class MarkRead(Body):
    ids: list[RowId] = Field(min_length=1, max_length=1000)  # type: ignore[valid-type]


class Marked(BaseModel):
    marked: int = Field(description="messages that changed from unread to read")


class ReceiptStatus(BaseModel):
    status: str


class Health(BaseModel):
    status: str


class RejectedEvent(BaseModel):
    index: int = Field(description="position of the item in the request's list (0 for a single event)")
    error: str = Field(description="the field and what is wrong with it")


class IngestResult(BaseModel):
    accepted: int
    rejected: list[RejectedEvent]


class ErrorOut(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where: body, query or path, then the field")
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    detail: list[ValidationIssue]


_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
#: what each error status means, for the ``responses`` of a route
_ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body could not be read: not JSON, not UTF-8, "
                                             "or nested deeper than 64 levels"},
    401: {"model": ErrorOut, "description": "No API key, or an unknown, revoked or expired one",
          "headers": _WWW_AUTHENTICATE},
    403: {"model": ErrorOut, "description": "Not allowed: the API key lacks the route's scope"},
    404: {"model": ErrorOut, "description": "Not found"},
    413: {"model": ErrorOut, "description": "Too many items in one request"},
    422: {"model": ValidationErrorOut, "description": "A parameter or body field does not validate"},
    503: {"model": ErrorOut, "description": "Not configured on this server"},
}


def responses(*codes: int, **overrides: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route answering ``codes``; ``overrides`` (``_403={...}``)
    replace the description or model of one."""
    out: dict[int | str, dict[str, Any]] = {code: dict(_ERRORS[code]) for code in codes}
    for name, spec in overrides.items():
        out[int(name.lstrip("_"))] = spec
    return out


def text(description: str) -> dict[str, Any]:
    """A plain-text answer, for ``responses``."""
    return {"description": description, "content": _TEXT}


def with_components(app: FastAPI, *models: type[BaseModel]) -> None:
    """List ``models`` (and the models they use) in /openapi.json's ``components``, for the
    request bodies that routes declare by reference (``openapi_extra``)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = build()
            _, defs = models_json_schema([(m, "validation") for m in models],
                                         ref_template="#/components/schemas/{model}")
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(defs.get("$defs", {}))
            schemas["JsonValue"] = JSON_VALUE_SCHEMA
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

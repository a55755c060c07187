"""Endpoints that customers and providers call back: one-click unsubscribe,
inbound SMS (STOP), and delivery receipts (delivered, bounced, complained)."""

import os
from collections.abc import Callable
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from pydantic import ConfigDict, Field, model_validator

from ceap.api.schemas import Body, ErrorOut, PathText, ReceiptStatus, responses, text
from ceap.api.security import twilio_signed
from ceap.channels.receipts import (
    TWILIO_MESSAGE_STATUSES,
    is_bounce,
    twilio_message_receipt,
    twilio_signature_valid,
)
from ceap.delivery.consent_store import add_suppression, customers_by_phone, handle_inbound_sms
from ceap.delivery.outbox import Outbox
from ceap.delivery.unsubscribe import TOKEN_MAX_LENGTH, TOKEN_PATTERN, unsubscribe_response
from ceap.json_input import HAS_NUL, NO_NUL, Text
from ceap.model import utcnow
from ceap.outcomes.engagement import record_inbound_sms

TWILIO_TOKEN_ENV = "TWILIO_AUTH_TOKEN"


def _invalid(field: str, message: str) -> RequestValidationError:
    """A 422 for a form field, in the shape of every other validation error."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


async def _form(request: Request, *fields: str) -> dict[str, str]:
    """The form body; 422 when one of ``fields`` holds a NUL (no store could keep it)."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    for name in fields:
        if "\x00" in form.get(name, ""):
            raise _invalid(name, HAS_NUL)
    return form


_TOKEN_PARAMETER = {"name": "token", "in": "query", "required": True,
                    "description": "the signed token of the link (`v1.<claims>.<signature>`)",
                    "schema": {"type": "string", "pattern": TOKEN_PATTERN, "maxLength": TOKEN_MAX_LENGTH}}
_UNSUBSCRIBE_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: text("The token is missing or malformed"),
    403: text("The token is forged or expired (the answer says no more)"),
    503: text("No signing key on this server (CEAP_SIGNING_SECRET)"),
}
_ONE_CLICK_FORM = {"requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "properties": {"List-Unsubscribe": {"type": "string",
                                                                     "enum": ["One-Click"]}}}}}}}


def _twilio_checked(request: Request, form: dict[str, str]) -> None:
    token = os.environ.get(TWILIO_TOKEN_ENV)
    if not token:
        if request.app.state.auth:
            raise HTTPException(503, f"Twilio webhooks need {TWILIO_TOKEN_ENV} to check signatures")
        return
    signature = request.headers.get("x-twilio-signature", "")
    if not twilio_signature_valid(str(request.url), form, signature, token):
        raise HTTPException(403, "bad Twilio signature")


def _form_body(required: list[str], **fields: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI form ``requestBody`` (Twilio sends more fields than these; all are kept)."""
    schema = {"type": "object", "properties": fields, "required": required, "additionalProperties": True}
    return {"requestBody": {"required": bool(required), "content": {
        "application/x-www-form-urlencoded": {"schema": schema}}}}


_TEXT_FIELD: dict[str, Any] = {"type": "string", "pattern": NO_NUL}
_SMS_FORM = _form_body([], From=_TEXT_FIELD, Body=_TEXT_FIELD)
_STATUS_FORM = _form_body(
    ["MessageSid", "MessageStatus"], MessageSid={**_TEXT_FIELD, "minLength": 1},
    MessageStatus={"type": "string", "enum": sorted(TWILIO_MESSAGE_STATUSES)},
    ErrorCode=_TEXT_FIELD, ErrorMessage=_TEXT_FIELD, To=_TEXT_FIELD)


def router(signed: bool = True) -> APIRouter:
    """Unsubscribe and the Twilio webhooks; ``signed``: Twilio signatures are checked
    (declared in /openapi.json)."""
    api = APIRouter()

    async def unsubscribe(request: Request) -> Response:
        """RFC 8058 one-click: a POST revokes consent at once; a GET shows a confirmation form."""
        answer = unsubscribe_response(request.app.state.store, request.method,
                                      request.query_params.get("token"))
        return Response(answer.body, answer.status, media_type=answer.content_type.split(";")[0])

    for method, extra in (("GET", {}), ("POST", _ONE_CLICK_FORM)):
        api.add_api_route("/v1/unsubscribe", unsubscribe, methods=[method], response_class=HTMLResponse,
                          name=f"unsubscribe_{method.lower()}", responses=_UNSUBSCRIBE_ANSWERS,
                          openapi_extra={"parameters": [_TOKEN_PARAMETER], **extra},
                          summary="Confirmation page" if method == "GET" else "One-click unsubscribe")

    guard = [Depends(twilio_signed)] if signed else []
    refused: dict[int | str, dict[str, Any]] = {
        403: {"model": ErrorOut, "description": "Bad Twilio signature"},
        503: {"model": ErrorOut, "description": f"{TWILIO_TOKEN_ENV} is not set"}} if signed else {}

    @api.post("/v1/webhooks/twilio/sms/{tenant_id}", dependencies=guard, response_class=Response,
              openapi_extra=_SMS_FORM,
              responses={200: {"description": "Empty TwiML", "content": {
                  "application/xml": {"schema": {"type": "string"}}}}, **refused, **responses(422)})
    async def inbound_sms(tenant_id: PathText, request: Request) -> Response:
        """Replies to our SMS: STOP and its synonyms revoke SMS consent at once. Any reply is
        recorded as ``replied`` (a STOP also as ``unsubscribed``) on the customer's latest SMS."""
        form = await _form(request, "From", "Body")
        _twilio_checked(request, form)
        store = request.app.state.store
        result = handle_inbound_sms(store, tenant_id, form.get("From", ""), form.get("Body", ""))
        with store.tx() as tx:
            customers = customers_by_phone(tx, tenant_id, form.get("From", ""))
        record_inbound_sms(store, tenant_id, customers, stop=result.action == "stop")
        return Response("<Response/>", media_type="application/xml")

    @api.post("/v1/webhooks/twilio/status/{tenant_id}", dependencies=guard, response_model=ReceiptStatus,
              openapi_extra=_STATUS_FORM, responses={**refused, **responses(404, 422)})
    async def twilio_status(tenant_id: PathText, request: Request) -> dict[str, str]:
        """Twilio status callbacks: delivered, undelivered (a bounce suppresses the number)."""
        form = await _form(request, "MessageSid", "MessageStatus", "ErrorCode", "ErrorMessage", "To")
        _twilio_checked(request, form)
        if not form.get("MessageSid"):
            raise _invalid("MessageSid", "Field required")
        try:
            receipt = twilio_message_receipt(form, dict(request.headers))
        except ValueError as exc:
            raise _invalid("MessageStatus", str(exc)) from None
        if receipt.status is None:
            return {"status": "in progress"}
        store = request.app.state.store
        found = Outbox(store, "api").receipt(tenant_id, receipt.provider_id, None, receipt.status,
                                              receipt.error, utcnow())
        if found is None:
            raise HTTPException(404, "no delivery with that provider id")
        if receipt.address and is_bounce(receipt.error):
            add_suppression(store, tenant_id, found.channel, receipt.address, "hard_bounce")
        return {"status": receipt.status}

    return api


class ReceiptIn(Body):
    """A delivery found by ``provider_id`` or else ``idempotency_key`` (give one)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [name], "properties": {name: {"type": "string"}}}
        for name in ("provider_id", "idempotency_key")]})

    provider_id: Text | None = Field(None, min_length=1, max_length=1000)
    idempotency_key: Text | None = Field(None, min_length=1, max_length=1000)
    status: Literal["delivered", "bounced", "failed", "complained"]
    detail: Text | None = None
    address: Text | None = None

    @model_validator(mode="after")
    def _one_id(self) -> "ReceiptIn":
        if self.provider_id is None and self.idempotency_key is None:
            raise ValueError("give provider_id or idempotency_key")
        return self


def receipts_router(tenant_dependency: Callable[..., str], auth: bool = True) -> APIRouter:
    """The generic receipt endpoint, for relays that hold an API key."""
    api = APIRouter()

    @api.post("/v1/receipts", response_model=ReceiptStatus,
              responses=responses(400, *((401, 403) if auth else ()), 404, 422))
    def receipt(body: ReceiptIn, request: Request,
                tenant_id: Annotated[str, Depends(tenant_dependency)]) -> dict[str, str]:
        """A delivery's receipt from any relay, found by provider id or idempotency key."""
        store = request.app.state.store
        found = Outbox(store, "api").receipt(tenant_id, body.provider_id, body.idempotency_key,
                                              body.status, body.detail, utcnow())
        if found is None:
            raise HTTPException(404, "no such delivery")
        if body.address and body.status in ("bounced", "complained"):
            add_suppression(store, tenant_id, found.channel, body.address,
                            "complaint" if body.status == "complained" else "hard_bounce")
        return {"status": body.status}

    return api

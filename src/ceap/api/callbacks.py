"""Endpoints that customers and providers call back: one-click unsubscribe,
inbound SMS (STOP), and delivery receipts (delivered, bounced, complained)."""

import os
from typing import Annotated, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, model_validator

from ceap.channels.receipts import is_bounce, twilio_message_receipt, twilio_signature_valid
from ceap.delivery.consent_store import add_suppression, customers_by_phone, handle_inbound_sms
from ceap.delivery.outbox import Outbox
from ceap.delivery.unsubscribe import unsubscribe_response
from ceap.model import utcnow
from ceap.outcomes.engagement import record_inbound_sms

router = APIRouter()
TWILIO_TOKEN_ENV = "TWILIO_AUTH_TOKEN"


async def _form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))


@router.get("/v1/unsubscribe")
@router.post("/v1/unsubscribe")
async def unsubscribe(request: Request, token: str | None = None) -> Response:
    """RFC 8058 one-click: a POST revokes consent at once; a GET shows a confirmation form."""
    if token is None and request.method == "POST":
        token = (await _form(request)).get("token")
    answer = unsubscribe_response(request.app.state.store, request.method, token)
    return Response(answer.body, answer.status, media_type=answer.content_type.split(";")[0])


def _twilio_checked(request: Request, form: dict[str, str]) -> None:
    token = os.environ.get(TWILIO_TOKEN_ENV)
    if not token:
        if request.app.state.auth:
            raise HTTPException(503, f"Twilio webhooks need {TWILIO_TOKEN_ENV} to check signatures")
        return
    signature = request.headers.get("x-twilio-signature", "")
    if not twilio_signature_valid(str(request.url), form, signature, token):
        raise HTTPException(403, "bad Twilio signature")


@router.post("/v1/webhooks/twilio/sms/{tenant_id}")
async def inbound_sms(tenant_id: str, request: Request) -> Response:
    """Replies to our SMS: STOP and its synonyms revoke SMS consent at once. Any reply is
    recorded as ``replied`` (a STOP also as ``unsubscribed``) on the customer's latest SMS."""
    form = await _form(request)
    _twilio_checked(request, form)
    store = request.app.state.store
    result = handle_inbound_sms(store, tenant_id, form.get("From", ""), form.get("Body", ""))
    with store.tx() as tx:
        customers = customers_by_phone(tx, tenant_id, form.get("From", ""))
    record_inbound_sms(store, tenant_id, customers, stop=result.action == "stop")
    return Response("<Response/>", media_type="application/xml")


@router.post("/v1/webhooks/twilio/status/{tenant_id}")
async def twilio_status(tenant_id: str, request: Request) -> dict[str, str]:
    """Twilio status callbacks: delivered, undelivered (a bounce suppresses the number)."""
    form = await _form(request)
    _twilio_checked(request, form)
    try:
        receipt = twilio_message_receipt(form, dict(request.headers))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
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


class ReceiptIn(BaseModel):
    provider_id: str | None = None
    idempotency_key: str | None = None
    status: Literal["delivered", "bounced", "failed", "complained"]
    detail: str | None = None
    address: str | None = None

    @model_validator(mode="after")
    def _one_id(self) -> "ReceiptIn":
        if not (self.provider_id or self.idempotency_key):
            raise ValueError("give provider_id or idempotency_key")
        return self


def receipts_router(tenant_dependency: object) -> APIRouter:
    """The generic receipt endpoint, for relays that hold an API key."""
    api = APIRouter()

    @api.post("/v1/receipts")
    def receipt(body: ReceiptIn, request: Request,
                tenant_id: Annotated[str, Depends(tenant_dependency)]) -> dict[str, str]:
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

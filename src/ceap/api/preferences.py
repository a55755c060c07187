"""The preference center over HTTP: ``/v1/preferences`` (JSON) and ``/v1/preferences/page``
(a server-rendered page, no script), both through a signed link (``?token=``)."""


from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from ceap.api.callbacks import _TOKEN_PARAMETER
from ceap.api.schemas import Body, ErrorOut, responses, text
from ceap.api.security import client
from ceap.delivery.preferences import (
    PreferenceError,
    apply_changes,
    page_response,
    preferences,
    token_error,
)
from ceap.delivery.unsubscribe import (
    TOKEN_MAX_LENGTH,
    TOKEN_PATTERN,
    UnsubscribeClaims,
    UnsubscribeError,
    verify,
)
from ceap.json_input import Text

Token = Annotated[str, Query(pattern=TOKEN_PATTERN, max_length=TOKEN_MAX_LENGTH,
                             description="the signed token of the link (`v1.<claims>.<signature>`)")]


class PreferenceOut(BaseModel):
    channel: str
    topic: str = Field(description="a topic, or `*` for every topic of the channel")
    granted: bool | None = Field(description="null: nothing recorded, the channel's default applies")


class PreferencesOut(BaseModel):
    preferences: list[PreferenceOut]
    changed: int = Field(0, description="consent rows this request changed")


class PreferenceIn(Body):
    channel: Text = Field(min_length=1, max_length=100)
    topic: Text = Field("*", min_length=1, max_length=200)
    granted: bool


class PreferencesIn(Body):
    changes: list[PreferenceIn] = Field(min_length=1, max_length=200)


_BAD_TOKEN: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A change names no channel, or the token is malformed"},
    403: {"model": ErrorOut, "description": "The token is forged or expired"},
    503: {"model": ErrorOut, "description": "No signing key on this server (CEAP_SIGNING_SECRET)"},
}
_PAGE_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: text("The token is missing or malformed"),
    403: text("The token is forged or expired (the answer says no more)"),
    503: text("No signing key on this server (CEAP_SIGNING_SECRET)"),
}
_FORM = {"requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}}


def _checked(token: str) -> UnsubscribeClaims:
    try:
        return verify(token)
    except UnsubscribeError as exc:
        status, message = token_error(exc)
        raise HTTPException(status, message) from None


def _out(store: Any, claims: UnsubscribeClaims, changed: int = 0) -> PreferencesOut:
    return PreferencesOut(changed=changed, preferences=[
        PreferenceOut(channel=p.channel, topic=p.topic, granted=p.granted)
        for p in preferences(store, claims.tenant_id, claims.customer_id)])


def router() -> APIRouter:
    api = APIRouter(tags=["preferences"])

    answers = {**_BAD_TOKEN, **responses(422)}

    @api.get("/v1/preferences", response_model=PreferencesOut, responses=answers)
    def show(token: Token, request: Request) -> PreferencesOut:
        """The customer's channels and topics, and what they agreed to."""
        return _out(request.app.state.store, _checked(token))

    @api.post("/v1/preferences", response_model=PreferencesOut, responses=answers)
    def change(token: Token, body: PreferencesIn, request: Request) -> PreferencesOut:
        """Change consent per channel and topic; kept in the consent history and the audit log."""
        claims = _checked(token)
        store = request.app.state.store
        try:
            changed = apply_changes(store, claims, [(c.channel, c.topic, c.granted) for c in body.changes],
                                    origin=client(request))
        except PreferenceError as exc:
            raise HTTPException(400, str(exc)) from None
        return _out(store, claims, changed)

    async def page(request: Request) -> Response:
        form = None
        if request.method == "POST":
            form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
            form = {k: v for k, v in form.items() if "\x00" not in k + v}
        answer = page_response(request.app.state.store, request.method, request.query_params.get("token"),
                               form, origin=client(request))
        return Response(answer.body, answer.status, media_type=answer.content_type.split(";")[0])

    for method, extra in (("GET", {}), ("POST", _FORM)):
        api.add_api_route("/v1/preferences/page", page, methods=[method], response_class=HTMLResponse,
                          name=f"preferences_page_{method.lower()}", responses=_PAGE_ANSWERS,
                          openapi_extra={"parameters": [_TOKEN_PARAMETER], **extra},
                          summary="The preference page" if method == "GET" else "Save the page's choices")
    return api

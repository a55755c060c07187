"""SMS through Twilio's REST API (or any API of its shape).

``POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json``, a form with
To, Body, From (or MessagingServiceSid) and StatusCallback, basic auth with
the account SID (or an API key SID) and the auth token read from the
environment variable ``auth_token_env``.

Rate: Twilio queues what a sender cannot send at once; a US long code sends
about 1 message a second (toll-free 3, short codes 100), hence
``default_rate_per_sec = 1``; set ``rate_per_sec`` for your sender.

Idempotency: the Messages API takes no idempotency key (Twilio's
``I-Twilio-Idempotency-Token`` is a header Twilio puts on the webhooks it
sends, see ``ceap.channels.receipts``), so ``provider_dedup`` is False and
the channel's own ledger (``sent_keys``) reports repeated keys.

Errors: 429 (code 20429) and 5xx are retried, with ``Retry-After`` when given;
time-outs too (``http_common`` does the HTTP: its SSRF guard refuses a
private ``base_url`` unless ``allow_private``). 21211 and other dead-number codes are bounces; 21610 (the
recipient replied STOP) is a permanent ``unsubscribed`` failure.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import Field, model_validator

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.external import env_secret
from ceap.channels.http_common import HttpChannel, HttpConfig, HttpRequest, Response
from ceap.channels.http_status import http_failure
from ceap.channels.receipts import twilio_error

SID = r"^[A-Z]{2}[0-9A-Za-z]{1,64}$"


class TwilioConfig(HttpConfig):
    """What the SMS and voice channels share."""

    base_url: str = Field("https://api.twilio.com", description="the API root (tests: a local server)")
    account_sid: str = Field(pattern=SID, description="the account (AC...)")
    api_key_sid: str | None = Field(None, pattern=SID, description="authenticate with an API key "
                                    "(SK...) instead of the account SID")
    auth_token_env: str = Field("TWILIO_AUTH_TOKEN", description="env var holding the auth token "
                                "(or the API key secret)")
    status_callback: str | None = Field(None, description="URL Twilio posts status changes to")


def twilio_result(key: str, response: Response) -> SendResult:
    """A Twilio answer: 2xx with the resource's ``sid``, else its ``code``/``message``."""
    try:
        body: Any = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if 200 <= response.status < 300:
        return SendResult(key, "sent", provider_id=body.get("sid"))
    code = body.get("code")
    error = (twilio_error(code, body.get("message")) if code
             else f"twilio HTTP {response.status}")
    return http_failure(key, response.status, response.headers, error)


class TwilioChannel(HttpChannel[Any]):
    """POSTs one form per message to ``resource`` (Messages or Calls)."""

    resource: ClassVar[str] = "Messages"

    def __init__(self, config: Any, context: Any = None):
        super().__init__(config, context)
        # fail when built, naming the variable (read again at each send, so a rotation holds)
        env_secret(self, config.auth_token_env, "Twilio auth token")

    def __repr__(self) -> str:  # the config holds the env var's name, never the token
        return f"{type(self).__name__}(account_sid={self.config.account_sid}, token=**********)"

    def form(self, form: dict[str, str | None]) -> HttpRequest:
        """The POST of ``form`` (None values left out) to ``resource``, with basic auth."""
        cfg = self.config
        token = env_secret(self, cfg.auth_token_env, "Twilio auth token").get_secret_value()
        basic = base64.b64encode(f"{cfg.api_key_sid or cfg.account_sid}:{token}".encode()).decode()
        url = f"{cfg.base_url.rstrip('/')}/2010-04-01/Accounts/{cfg.account_sid}/{self.resource}.json"
        body = urlencode({k: v for k, v in form.items() if v is not None}).encode()
        return HttpRequest("POST", url, body, {"Authorization": f"Basic {basic}",
                                               "Accept": "application/json",
                                               "Content-Type": "application/x-www-form-urlencoded"})

    def answer(self, message: Message, response: Response) -> SendResult:
        return twilio_result(message.idempotency_key, response)


class TwilioSmsConfig(TwilioConfig):
    type: Literal["twilio_sms"] = "twilio_sms"
    from_number: str | None = Field(None, description="sender number (E.164) or alphanumeric id")
    messaging_service_sid: str | None = Field(None, pattern=SID, description="send through a "
                                              "messaging service (MG...) instead of one number")
    max_length: int = Field(1600, ge=1, le=1600, description="longer bodies are cut, ending with …")

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioSmsConfig:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of from_number and messaging_service_sid")
        return self


class TwilioSmsChannel(TwilioChannel):
    """One SMS per message: the body (the title when the body is empty)."""

    config_model: ClassVar[type[ChannelConfig]] = TwilioSmsConfig
    address: ClassVar[str | None] = "phone"
    default_rate_per_sec: ClassVar[float | None] = 1.0

    def request(self, message: Message) -> HttpRequest:
        cfg = self.config
        text = message.body or message.title
        if len(text) > cfg.max_length:
            text = text[: cfg.max_length - 1] + "…"
        return self.form({
            "To": message.to, "Body": text, "From": cfg.from_number,
            "MessagingServiceSid": cfg.messaging_service_sid, "StatusCallback": cfg.status_callback})

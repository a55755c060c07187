"""Voice calls through Twilio's REST API: the message is read out by TwiML.

``POST {base_url}/2010-04-01/Accounts/{account_sid}/Calls.json`` with To, From
and ``Twiml``: ``<Response><Say>title. body</Say></Response>``, every text
XML-escaped (and characters XML cannot carry dropped). When the message's
payload has ``callback_offer`` (true, or the prompt to read), a ``<Gather>``
asks for one key and posts it to ``gather_url``.

Rate: Twilio starts 1 call a second per account by default (its "CPS"),
hence ``default_rate_per_sec = 1``. Errors and idempotency as for SMS
(``ceap.channels.sms_twilio``): no provider dedup.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import ClassVar, Literal

from pydantic import Field

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.http_common import HttpRequest
from ceap.channels.sms_twilio import TwilioChannel, TwilioConfig

TWIML_MAX = 4000  # Twilio's limit for the Twiml parameter
DEFAULT_OFFER = "To be called back by an advisor, press 1."
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class TwilioVoiceConfig(TwilioConfig):
    type: Literal["twilio_voice"] = "twilio_voice"
    from_number: str = Field(description="the calling number (E.164)")
    voice: str | None = Field(None, description="Twilio <Say> voice, e.g. 'Polly.Joanna'")
    language: str | None = Field(None, description="<Say> language (default: the message's locale)")
    gather_url: str | None = Field(None, description="where a callback offer's key press is posted")
    timeout_seconds: int | None = Field(None, ge=5, le=600, description="ring time before giving up")


def _text(value: str) -> str:
    return _NOT_XML.sub("", value)


def build_twiml(message: Message, config: TwilioVoiceConfig) -> str:
    """The TwiML for ``message``; ElementTree escapes &, <, > and quotes."""
    say_attrs = {k: v for k, v in (("voice", config.voice),
                                   ("language", config.language or message.locale)) if v}
    root = ET.Element("Response")
    spoken = ". ".join(t.strip() for t in (message.title, message.body) if t and t.strip())
    ET.SubElement(root, "Say", say_attrs).text = _text(spoken)
    offer = message.payload.get("callback_offer")
    if offer:
        if not config.gather_url:
            raise ValueError("the payload asks for a callback offer but gather_url is not configured")
        gather = ET.SubElement(root, "Gather", {"input": "dtmf", "numDigits": "1", "timeout": "6",
                                                "action": _text(config.gather_url), "method": "POST"})
        prompt = offer if isinstance(offer, str) else DEFAULT_OFFER
        ET.SubElement(gather, "Say", say_attrs).text = _text(prompt)
    return ET.tostring(root, encoding="unicode")


class TwilioVoiceChannel(TwilioChannel):
    """One call per message, reading the title and the body."""

    config_model: ClassVar[type[ChannelConfig]] = TwilioVoiceConfig
    address: ClassVar[str | None] = "phone"
    default_rate_per_sec: ClassVar[float | None] = 1.0
    resource: ClassVar[str] = "Calls"

    def request(self, message: Message) -> HttpRequest | SendResult:
        cfg = self.config
        try:
            twiml = build_twiml(message, cfg)
        except ValueError as exc:
            return SendResult(message.idempotency_key, "failed", error=f"twilio_voice: {exc}")
        if len(twiml) > TWIML_MAX:
            return SendResult(message.idempotency_key, "failed",
                              error=f"twilio_voice: TwiML of {len(twiml)} characters, over {TWIML_MAX}")
        return self.form({
            "To": message.to, "From": cfg.from_number, "Twiml": twiml, "StatusCallback": cfg.status_callback,
            "Timeout": str(cfg.timeout_seconds) if cfg.timeout_seconds else None})

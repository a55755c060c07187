"""Slack, as an incoming webhook (``webhook_url_env``) or as a bot calling
``chat.postMessage`` (``token_env`` and a ``channel``). The text is the title
in bold over the body; a list under the payload's ``blocks`` is sent as Block
Kit blocks; the payload's ``slack_channel`` overrides ``channel``.

HTTP 429 with Retry-After (Slack's rate limit) is retryable with that wait; a
bot answer ``{"ok": false, "error": ...}`` maps by error code (``ratelimited``
and Slack's internal errors retryable, ``channel_not_found``, ``not_in_channel``,
``invalid_auth`` ... permanent). An incoming webhook answers errors as a
status and a short code (404 ``channel_not_found``, 403 ``invalid_token``).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.external import env_secret
from ceap.channels.http_common import HttpChannel, HttpConfig, HttpRequest, Response, result_for

#: ``ok: false`` errors worth another try
RETRYABLE = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error",
                       "service_unavailable", "request_timeout"})
_CODE = re.compile(r"[a-z_]{1,64}")


def slack_code(response: Response) -> str | None:
    """Slack's error code from a webhook's text body or a bot's JSON, if it looks like one."""
    text = response.body[:200].decode(errors="replace").strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text).get("error", ""))
        except (ValueError, AttributeError):
            return None
    return text if _CODE.fullmatch(text) else None


class SlackConfig(HttpConfig):
    type: Literal["slack"] = "slack"
    webhook_url_env: str | None = Field(None, description="environment variable holding an incoming "
                                                          "webhook URL (webhook mode)")
    token_env: str | None = Field(None, description="environment variable holding a bot token (bot mode)")
    channel: str | None = Field(None, description="bot mode: the channel ID to post to")
    api_base: str = Field("https://slack.com/api", description="Slack's Web API root")

    @model_validator(mode="after")
    def _check(self) -> SlackConfig:
        if (self.webhook_url_env is None) == (self.token_env is None):
            raise ValueError("set exactly one of webhook_url_env (webhook mode) and token_env (bot mode)")
        return self


class SlackChannel(HttpChannel[SlackConfig]):
    config_model: ClassVar[type[ChannelConfig]] = SlackConfig
    #: Slack allows about one message a second per channel (webhooks and chat.postMessage)
    default_rate_per_sec: ClassVar[float | None] = 1.0

    def __init__(self, config: SlackConfig, context: Any = None):
        super().__init__(config, context)
        if config.webhook_url_env:
            self._secret = env_secret(self, config.webhook_url_env, "Slack webhook URL")
        else:
            self._secret = env_secret(self, str(config.token_env), "Slack bot token")

    def __repr__(self) -> str:
        mode = "webhook" if self.config.webhook_url_env else f"bot, channel={self.config.channel}"
        return f"SlackChannel({mode}, secret=**********)"

    def request(self, m: Message) -> HttpRequest | SendResult:
        key = m.idempotency_key
        body: dict[str, Any] = {"text": f"*{m.title}*\n{m.body}" if m.title else m.body}
        if isinstance(m.payload.get("blocks"), list):
            body["blocks"] = m.payload["blocks"]
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.config.webhook_url_env:
            url = self._secret.get_secret_value()
        else:
            channel = m.payload.get("slack_channel") or self.config.channel
            if not channel:
                return SendResult(key, "failed", error="no Slack channel (set 'channel')")
            body["channel"] = channel
            url = self.config.api_base.rstrip("/") + "/chat.postMessage"
            headers["Authorization"] = f"Bearer {self._secret.get_secret_value()}"
        return HttpRequest("POST", url, json.dumps(body).encode(), headers)

    def answer(self, m: Message, response: Response) -> SendResult:
        key = m.idempotency_key
        result = result_for(key, response)
        code = slack_code(response)
        if result.status != "sent":
            return SendResult(key, "failed", error=f"{result.error} {code or ''}".strip(),
                              retryable=result.retryable, retry_after=result.retry_after)
        if not response.body.lstrip().startswith(b"{"):  # a webhook's "ok"
            return result
        try:
            answer = json.loads(response.body)
        except ValueError:
            return SendResult(key, "failed", error="Slack: unreadable answer", retryable=True)
        if answer.get("ok"):
            return SendResult(key, "sent", provider_id=answer.get("ts"))
        if code in RETRYABLE:
            return SendResult(key, "failed", error=f"Slack {code}", retryable=True,
                              retry_after=1.0 if code in ("ratelimited", "rate_limited") else None)
        return SendResult(key, "failed", error=f"Slack {code or 'error'}")

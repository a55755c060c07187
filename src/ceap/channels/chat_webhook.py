"""A chat bot's incoming webhook (Teams, Discord, Mattermost, Rocket.Chat, ...):
POST ``{"<text_key>": "<title and body>", **extra}`` as JSON.

Such a URL is a credential (the token is in its path), so it is read from the
environment variable ``url_env``; ``url`` is for URLs that hold none. The
SSRF guard, status mapping and Retry-After handling are ``http_common``'s,
as for the signed ``webhook`` channel.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ceap.channels.base import ChannelConfig, Message
from ceap.channels.external import env_secret
from ceap.channels.http_common import HttpChannel, HttpConfig, HttpRequest, Refused, check_url, json_request
from ceap.errors import PluginError

FIELDS = ("title", "body", "customer_id", "program", "tenant_id")


class ChatWebhookConfig(HttpConfig):
    type: Literal["chat_webhook"] = "chat_webhook"
    url_env: str | None = Field(None, description="environment variable holding the webhook URL")
    url: str | None = Field(None, description="the webhook URL, when it holds no token")
    text_key: str = Field("text", description="body key of the text ('content' for Discord)")
    text: str = Field("{title}\n{body}", description=f"the text; placeholders: {', '.join(FIELDS)}")
    extra: dict[str, Any] = Field(default_factory=dict, description="more body keys (username, ...)")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is not None:
            try:
                check_url(url, bool(info.data.get("allow_private")))
            except Refused as exc:
                raise ValueError(str(exc)) from None
        return url

    @model_validator(mode="after")
    def _check(self) -> ChatWebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of url_env and url")
        unknown = {n for _, n, _, _ in string.Formatter().parse(self.text) if n is not None} - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)} in text (known: {list(FIELDS)})")
        return self


class ChatWebhookChannel(HttpChannel[ChatWebhookConfig]):
    config_model: ClassVar[type[ChannelConfig]] = ChatWebhookConfig
    #: Discord allows 30 messages a minute per webhook, Teams 4 a second: 0.5/s fits both
    default_rate_per_sec: ClassVar[float | None] = 0.5

    def __init__(self, config: ChatWebhookConfig, context: Any = None):
        super().__init__(config, context)
        self._url = env_secret(self, config.url_env, "webhook URL") if config.url_env else None
        if self._url is not None:
            try:
                check_url(self._url.get_secret_value(), config.allow_private)
            except Refused as exc:
                raise PluginError(f"chat_webhook: the URL in {config.url_env}: {exc}") from None

    def __repr__(self) -> str:
        return f"ChatWebhookChannel(url={'**********' if self._url else self.config.url})"

    def request(self, m: Message) -> HttpRequest:
        url = self._url.get_secret_value() if self._url else str(self.config.url)
        text = self.config.text.format(**{f: getattr(m, f) for f in FIELDS}).strip()
        return json_request(url, {**self.config.extra, self.config.text_key: text}, {})

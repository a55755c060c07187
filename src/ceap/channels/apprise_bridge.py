"""A bridge to Apprise's 100-odd services: each message is sent to every
Apprise URL configured (``mailto://``, ``tgram://``, ``json://`` ...). Needs
apprise: ``pip install 'ceap[apprise]'``.

Apprise URLs usually hold tokens, so ``urls_env`` names an environment
variable holding them (separated by spaces, commas or new lines); ``urls``
is for URLs that hold none. They are operator settings, not tenant input, so
the webhook SSRF guard does not apply; errors name only a URL's scheme.

Apprise answers one boolean for all its URLs: True is ``sent``; False is a
retryable failure (Apprise does not say why), and a retry goes to every URL
again. Apprise throttles each service itself (its ``request_rate_per_sec``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.external import ExternalChannel, ExternalConfig, env_secret
from ceap.errors import PluginError


class AppriseConfig(ExternalConfig):
    type: Literal["apprise"] = "apprise"
    urls_env: str | None = Field(None, description="environment variable holding Apprise URLs")
    urls: list[str] = Field(default_factory=list, description="Apprise URLs that hold no secret")
    concurrency: int = Field(1, ge=1, le=64, description="messages in flight at once")

    @model_validator(mode="after")
    def _check(self) -> AppriseConfig:
        if not self.urls and not self.urls_env:
            raise ValueError("set urls_env or urls")
        return self


class AppriseChannel(ExternalChannel[AppriseConfig]):
    config_model: ClassVar[type[ChannelConfig]] = AppriseConfig
    default_rate_per_sec: ClassVar[float | None] = None  # each Apprise service throttles itself

    def __init__(self, config: AppriseConfig, context: Any = None):
        super().__init__(config, context)
        try:
            import apprise
        except ImportError:
            raise PluginError("the apprise channel needs apprise: pip install 'ceap[apprise]'") from None
        urls = list(config.urls)
        if config.urls_env:
            urls += [u for u in re.split(r"[\s,]+", env_secret(self, config.urls_env, "Apprise URLs")
                                         .get_secret_value()) if u]
        self._apprise = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        for i, url in enumerate(urls):
            if not self._apprise.add(url):
                scheme = url.partition("://")[0] if "://" in url else "?"
                raise PluginError(f"apprise channel: URL #{i + 1} (scheme {scheme!r}) is not a valid "
                                  "Apprise URL")

    def __repr__(self) -> str:
        return f"AppriseChannel({len(self._apprise)} URL(s), hidden)"

    def deliver_one(self, m: Message) -> SendResult:
        if self._apprise.notify(body=m.body or m.title, title=m.title):
            return SendResult(m.idempotency_key, "sent")
        return SendResult(m.idempotency_key, "failed", retryable=True,
                          error="apprise: a service did not accept the message")

"""A bridge to Apprise's 100-odd services: each message is sent to every
Apprise URL configured (``mailto://``, ``tgram://``, ``json://`` ...). Needs
apprise: ``pip install 'ceap[apprise]'``.

Apprise URLs usually hold tokens, so ``urls_env`` names an environment
variable holding them (separated by spaces, commas or new lines); ``urls``
is for URLs that hold none. Errors name only a URL's number and scheme.

Apprise makes its own connections, and the SSRF guard of the webhook
channels applies to them (``ceap.channels.outbound_guard``): a URL whose
host is a literal address is checked when the channel is built; every
connection Apprise makes while sending is checked on the address it is
about to use (after DNS); link-local addresses (169.254.169.254) are
refused always, loopback and private ones unless ``allow_private``; no
redirect is followed and no proxy variable is read. A refused connection or
an unfollowed redirect fails the message permanently (a retry would be
refused again), with the reason.

Otherwise Apprise answers one boolean for all its URLs: True is ``sent``;
False is a retryable failure (Apprise does not say why), and a retry goes to
every URL again. Apprise throttles each service itself (its
``request_rate_per_sec``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.external import ExternalChannel, ExternalConfig, env_secret
from ceap.channels.http_common import refusal
from ceap.channels.outbound_guard import guarded
from ceap.errors import PluginError


def _scheme(url: str) -> str:
    return url.partition("://")[0] if "://" in url else "?"


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why the guard refuses ``url``'s host when it is a literal address (None: allowed
    now; a name is checked when Apprise connects)."""
    try:
        host = urlsplit(url).hostname
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    why = refusal(ip, allow_private)
    return f"{ip} is {why}" if why else None


class AppriseConfig(ExternalConfig):
    type: Literal["apprise"] = "apprise"
    allow_private: bool = Field(False, description="allow loopback and private targets (self-hosted)")
    urls_env: str | None = Field(None, description="environment variable holding Apprise URLs")
    urls: list[str] = Field(default_factory=list, description="Apprise URLs that hold no secret")
    concurrency: int = Field(1, ge=1, le=64, description="messages in flight at once")

    @field_validator("urls")
    @classmethod
    def _check_hosts(cls, urls: list[str], info: ValidationInfo) -> list[str]:
        for i, url in enumerate(urls):
            why = url_refusal(url, bool(info.data.get("allow_private")))
            if why:
                raise ValueError(f"URL #{i + 1} (scheme {_scheme(url)!r}): {why}")
        return urls

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
        # async_mode off: Apprise works in this thread, or in threads given a copy of its
        # context (Apprise 2), so the guard's context reaches every connection it makes
        self._apprise = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory", async_mode=False))
        for i, url in enumerate(urls):
            why = url_refusal(url, config.allow_private)
            if why:
                raise PluginError(f"apprise channel: URL #{i + 1} (scheme {_scheme(url)!r}): {why}")
            if not self._apprise.add(url):
                raise PluginError(f"apprise channel: URL #{i + 1} (scheme {_scheme(url)!r}) is not a "
                                  "valid Apprise URL")

    def __repr__(self) -> str:
        return f"AppriseChannel({len(self._apprise)} URL(s), hidden)"

    def deliver_one(self, m: Message) -> SendResult:
        with guarded(self.config.allow_private) as guard:
            accepted = self._apprise.notify(body=m.body or m.title, title=m.title)
        if accepted:  # (an address refused before an allowed one of the same host was reached)
            return SendResult(m.idempotency_key, "sent")
        if guard.refused:  # permanent: the same URL would be refused again
            why = guard.refused[0]
            return SendResult(m.idempotency_key, "failed",
                              error=why if why.startswith("HTTP ") else f"refused: {why}")
        return SendResult(m.idempotency_key, "failed", retryable=True,
                          error="apprise: a service did not accept the message")

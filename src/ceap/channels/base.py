"""The channel contract: send a batch of messages, one result per message.

Every message carries an idempotency key scoped by tenant; a channel that is
handed the same key twice must not deliver twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from ceap.plugin import Plugin, PluginConfig

SendStatus = Literal["sent", "delivered", "duplicate", "failed"]


@dataclass(frozen=True)
class Message:
    """One rendered action for one customer on one channel."""

    tenant_id: str
    idempotency_key: str
    customer_id: str
    program: str
    channel: str
    title: str = ""
    body: str = ""
    candidate_id: int | None = None
    to: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    category: str = "marketing"
    locale: str | None = None


@dataclass(frozen=True)
class SendResult:
    """What the provider said about one message."""

    idempotency_key: str
    status: SendStatus
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    #: a failed send that may work later (429, 5xx, time-out); False: give up now
    retryable: bool = False


class ChannelConfig(PluginConfig):
    """Fields every channel has, whatever its provider."""

    rate_per_sec: float | None = Field(None, gt=0, description="provider rate limit (default: the channel's)")
    shadow: bool = Field(False, description="record what would be sent, send nothing")
    resend_in_flight: bool = Field(
        False, description="after a crash, resend attempts that were in flight (reported as "
                           "ambiguous) instead of holding them for a person")
    max_attempts: int | None = Field(None, ge=1, le=50, description="retries before dead letter")
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the breaker")
    breaker_cooldown: float = Field(30.0, gt=0, description="seconds the breaker stays open")


H = TypeVar("H", bound=ChannelConfig)


class Channel(Plugin[H]):
    """Delivers messages; ``send`` returns results in the order of the messages."""

    kind: ClassVar[str] = "channel"
    config_model: ClassVar[type[ChannelConfig]] = ChannelConfig
    #: the profile field holding this channel's address (None: the customer id is enough)
    address: ClassVar[str | None] = None
    #: the provider deduplicates by idempotency key, so an attempt in flight may be resent
    provider_dedup: ClassVar[bool] = False
    #: the provider's documented rate limit, messages per second (None: unlimited)
    default_rate_per_sec: ClassVar[float | None] = None

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the default holds none."""

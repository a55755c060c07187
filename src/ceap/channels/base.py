"""The channel contract: send a batch of messages, one result per message.

Every message carries an idempotency key scoped by tenant; a channel that is
handed the same key twice must not deliver twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

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


@dataclass(frozen=True)
class SendResult:
    """What the provider said about one message."""

    idempotency_key: str
    status: SendStatus
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None


class ChannelConfig(PluginConfig):
    """Base of channel configs."""


H = TypeVar("H", bound=ChannelConfig)


class Channel(Plugin[H]):
    """Delivers messages; ``send`` returns results in the order of the messages."""

    kind: ClassVar[str] = "channel"
    config_model: ClassVar[type[ChannelConfig]] = ChannelConfig

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the default holds none."""

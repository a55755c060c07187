"""The channel contract: send a batch of messages, one result per message.

Every message carries an idempotency key scoped by tenant; a channel that is
handed the same key twice must not deliver twice.

What a crash can leave unrecorded is bounded by what a channel has in flight:
the dispatcher marks a message ``sending`` right before the channel gets it
and records its result right after. A plain channel gets at most
``in_flight`` messages per ``send`` call. A channel with ``journaled = True``
takes the whole batch with a ``SendJournal`` (``send(messages, journal=...)``)
and asks it before each provider call (``begin``) and hands it each result
(``end``), so only the messages actually at the provider are in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import Field

from ceap.plugin import Plugin, PluginConfig

SendStatus = Literal["sent", "delivered", "duplicate", "failed"]

#: the data field of a push that holds the delivery's idempotency key, so the app can
#: report the push opened or clicked (``POST /v1/engagements``)
PUSH_KEY_FIELD = "ceap_idempotency_key"


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


def push_data(message: Message) -> dict[str, Any]:
    """A push's data: the message's payload and its idempotency key (``PUSH_KEY_FIELD``,
    which wins over a payload field of that name)."""
    return {**message.payload, PUSH_KEY_FIELD: message.idempotency_key}


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


class SendJournal(Protocol):
    """Where a journaled channel records each provider call, durably, as it happens.

    Per sending lane (a thread): ``begin(m)`` right before handing ``m`` to the
    provider; it returns once ``m`` is committed as ``sending``, together with
    every result the lane handed in before, or False if ``m`` must not be sent
    (another worker took it over: the dispatcher ignores whatever result the
    channel gives it). ``end(m, result)`` right after the provider answered; it
    queues the result for the next commit and returns at once; ending a message
    that was never begun records a call that failed before the provider could
    accept anything (it counts as an attempt). A lane begins its next message
    only after ending the previous one, so it never has more than one message
    ``sending``. ``begin_soon(m)`` asks the same without waiting, so that the
    commit overlaps work that cannot make the provider accept ``m`` (an SMTP
    envelope); the function it returns waits and says what ``begin`` would.
    A journal may also offer a batch form for a channel that sends from one
    thread (``batched = True``: ``begin_many``, ``end_many``, ``flush``; see
    ``ceap.channels.http_loop.BatchJournal``).
    """

    def begin(self, message: Message) -> bool: ...

    def begin_soon(self, message: Message) -> Callable[[], bool]: ...

    def end(self, message: Message, result: SendResult) -> None: ...


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
    #: messages the dispatcher hands one ``send`` call (each call's messages are marked
    #: ``sending`` before it and recorded after it, so a crash leaves at most this many in flight)
    in_flight: ClassVar[int] = 8
    #: ``send`` takes a ``journal`` keyword (a ``SendJournal``) and begins/ends each message
    #: with it; the dispatcher then hands it the whole batch (see ``ExternalChannel``)
    journaled: ClassVar[bool] = False

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the default holds none."""

"""What a real-time program declares: its trigger events, per-customer state
features over event time, fan-out through a lookup, and timed actions."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ceap.connectors.base import Connector, ConnectorConfig
from ceap.durations import Duration
from ceap.factories import empty_list

_REF = re.compile(r"^[A-Za-z0-9_.:\-]+(\.[A-Za-z_][A-Za-z0-9_]*)?$")
KINDS = ("count", "sum", "distinct", "last", "time_since", "sequence", "absence")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SequenceSpec(_Strict):
    """``sequence: {first: password_changed, then: email_changed}``."""

    first: str = Field(description="the event type that starts the sequence")
    then: str = Field(description="the event type that completes it")


class AbsenceSpec(_Strict):
    """``absence: {after: cart_updated, missing: purchase}``."""

    after: str = Field(description="the event type that starts the timer")
    missing: str = Field(description="the event type whose absence the timer detects")


class StateFeature(_Strict):
    """One per-customer feature over event time. Exactly one kind:

    - ``count: app_crash`` (with ``window``): events of that type in the window;
    - ``sum: purchase.amount`` / ``distinct: login.device_id`` (with ``window``);
    - ``last: login.country``: the attribute of the latest such event;
    - ``time_since: purchase``: seconds since the previous such event (null: never);
    - ``sequence: {first: password_changed, then: email_changed}`` with ``within``:
      true on a ``then`` event that follows a ``first`` event soon enough;
      ``capture`` copies attributes of the ``first`` event (``<name>_<attribute>``);
    - ``absence: {after: cart_updated, missing: purchase}`` with ``within``: a timer
      fires ``within`` after each ``after`` event, and the program runs for the
      customer if no ``missing`` event came in between.

    ``where`` narrows the events counted with a SQL condition over ``attributes``
    (a JSON object: ``attributes->>'new_device' = 'true'``).
    """

    count: str | None = None
    sum: str | None = None
    distinct: str | None = None
    last: str | None = None
    time_since: str | None = None
    sequence: SequenceSpec | None = None
    absence: AbsenceSpec | None = None
    window: Duration | None = None
    within: Duration | None = None
    where: str | None = None
    capture: list[str] = Field(default_factory=empty_list)

    @model_validator(mode="after")
    def _one_kind(self) -> StateFeature:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}")
        kind = given[0]
        if kind in ("count", "sum", "distinct") and self.window is None:
            raise ValueError(f"{kind} needs a window (e.g. 24h)")
        if kind in ("sum", "distinct", "last") and "." not in str(getattr(self, kind)):
            raise ValueError(f"{kind} names an attribute: '<event type>.<attribute>'")
        if kind in ("sequence", "absence") and self.within is None:
            raise ValueError(f"{kind} needs within (e.g. 5m)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    def span(self) -> timedelta:
        """How much history the feature needs before an event."""
        if self.kind in ("last", "time_since"):
            return timedelta(days=30)
        return self.window or self.within or timedelta(0)


class FanOut(_Strict):
    """Item-level events reach customers through a lookup table (wishlists, searches)."""

    lookup: dict[str, Any] = Field(description="a source block: {type: parquet, path: ...}")
    attribute: str = Field(description="the event attribute holding the item id")
    key: str = Field(description="the lookup column holding the item id")


class EventsConfig(ConnectorConfig):
    """``source: {type: events, on: [app_crash]}``: a real-time program's rows are the
    events of these types (after deduplication), with the state features added."""

    type: Literal["events"] = "events"
    on: list[str] = Field(default_factory=empty_list, description="event types that trigger the program")
    lateness: Duration = Field(timedelta(hours=1), description="later events are dropped as late")
    fan_out: FanOut | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 reads a bare ``on:`` key as the boolean true: take it as ``on``."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class EventsConnector(Connector[EventsConfig]):
    """The rows of a real-time program come from the worker's event stream, not from
    reading a table: this connector only carries the configuration."""

    config_model: ClassVar[type[ConnectorConfig]] = EventsConfig

    def describe(self) -> str:
        return f"events {', '.join(self.config.on)}"


class EscalationStep(_Strict):
    """One step of an escalation chain: these channels, ``after`` this long after the
    first action is due (its ``not_before``, so the action's ``delay`` counts too)."""

    after: Duration
    channels: list[str] = Field(min_length=1)
    kind: Literal["escalation"] = "escalation"


def is_realtime(spec: Any) -> bool:
    return getattr(spec.source, "type", None) == "events"

"""``action.digest``: hold a program's messages and send each customer one message
listing them, after a window or when a schedule fires (docs/digests.md)::

    action:
      digest: {key: comments, window: 1h, max_items: 10}
      digest: {key: daily_news, schedule: "0 9 * * *", timezone: customer}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ceap.durations import Duration
from ceap.spec.schedule import cron_of, zone

#: categories a digest never holds: their candidates are sent at once
NEVER_HELD = ("transactional", "security")
KEY_PATTERN = r"^[A-Za-z0-9_.\-]{1,100}$"


class Digest(BaseModel):
    """Collect a customer's candidates of this program (and of every program with the
    same ``key``) into one message: ``window`` after the first, or at the next
    ``schedule`` fire time in ``timezone``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = Field(None, description="groups the digest (default: the program's name); "
                            "programs with the same key share one digest per customer")
    window: Duration | None = Field(None, description="send this long after the first held item")
    schedule: str | None = Field(None, description="or send when this cron expression fires "
                                 "(5 fields, or hourly/daily/weekly/monthly)")
    timezone: str = Field("customer", description="time zone the schedule is read in: customer "
                          "(the profile's, else delivery.default_timezone), UTC or an IANA name")
    max_items: int = Field(10, ge=1, le=100, description="items listed in the message; the "
                           "rest are counted in digest.more")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(KEY_PATTERN, value):
            raise ValueError(f"{value!r} is not a digest key (1 to 100 letters, digits, _ . -)")
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(minutes=1) <= value <= timedelta(days=31):
            raise ValueError("window must be between 1m and 31d")
        return value

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        return None if value is None else cron_of(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value == "customer":
            return value
        if value.strip().lower() == "customer":
            raise ValueError(f"unknown time zone {value!r} (did you mean 'customer'?)")
        try:
            zone(value)
        except ValueError as exc:  # the digest's own choice first: customer
            raise ValueError(str(exc).replace("(an IANA name", "(customer, or an IANA name")) from None
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> Digest:
        if (self.window is None) == (self.schedule is None):
            raise ValueError("give either window (e.g. 1h) or schedule (e.g. '0 9 * * *'), "
                             "not both, not neither")
        if self.window is not None and self.timezone != "customer":
            raise ValueError("timezone applies to a schedule; a window needs none")
        return self

    def key_for(self, program: str) -> str:
        return self.key or program


@dataclass(frozen=True)
class DigestView:
    """What a digest message's template sees as ``digest`` (an object, so that
    ``digest.items`` is the list, not a mapping's method)."""

    key: str
    count: int
    items: list[dict[str, Any]]
    more: int
    window_start: str
    window_end: str

    @classmethod
    def of(cls, data: Any) -> DigestView | None:
        """The view of a message's ``payload.digest``; None when it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(str(data["key"]), int(data["count"]), list(data["items"]), int(data["more"]),
                       str(data["window_start"]), str(data["window_end"]))
        except (KeyError, TypeError, ValueError):
            return None


__all__ = ["NEVER_HELD", "Digest", "DigestView"]

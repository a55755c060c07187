"""When a batch program runs: its ``schedule:`` and the project's ``scheduler:`` settings.

``schedule:`` is a cron expression (five fields: minute hour day-of-month month
day-of-week, parsed by croniter), one of the words ``hourly``, ``daily``,
``weekly``, ``monthly`` (cron's own ``@hourly``... meanings: on the hour, at
00:00, Sunday 00:00, the 1st at 00:00), or an object with the time zone and
the catch-up policy::

    schedule: {cron: "0 7 * * *", timezone: Europe/Paris, catch_up: each, max_catch_up: 7}
"""

from __future__ import annotations

import difflib
import zoneinfo
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ceap.durations import Duration

CatchUp = Literal["skip", "once", "each"]

#: the words ``schedule:`` accepts, and the cron expression each stands for
WORDS = {"hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 0", "monthly": "0 0 1 * *"}


def cron_of(text: str) -> str:
    """The cron expression ``text`` stands for (a word, ``@word`` or five fields), checked.

    Raises ValueError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected a cron expression such as '0 7 * * *' or one of "
                         f"{', '.join(WORDS)}")
    word = text.strip().lower().removeprefix("@")
    if word in WORDS:
        return WORDS[word]
    expr = " ".join(text.split())
    if expr in WORDS.values():  # a word's expression, known good (croniter not needed)
        return expr
    if len(expr.split(" ")) == 1:
        close = difflib.get_close_matches(word, list(WORDS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(WORDS)}"
        raise ValueError(f"unknown schedule {text!r}: {hint} (or a cron expression such as "
                         "'0 7 * * *')")
    if len(expr.split(" ")) != 5:
        raise ValueError(f"cron expression {text!r} must have 5 fields (minute hour day-of-month "
                         f"month day-of-week), or be one of {', '.join(WORDS)}")
    from croniter import CroniterBadDateError, CroniterError, croniter  # only for cron fields

    try:
        croniter(expr, datetime(2000, 1, 1), ret_type=datetime).get_next()
    except CroniterBadDateError:
        raise ValueError(f"cron expression {text!r} never matches a date") from None
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"invalid cron expression {text!r}: {exc}") from None
    return expr


@lru_cache(maxsize=256)
def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``; ValueError (with the closest names) when unknown."""
    try:
        if not name or name != name.strip():
            raise ValueError
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else " (an IANA name such as Europe/Paris or UTC)"
        raise ValueError(f"unknown time zone {name!r}{hint}") from None


class Schedule(BaseModel):
    """A program's timetable. ``timezone`` None: ``ceap.yaml``'s ``scheduler.timezone``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str = Field(description="cron expression (5 fields) or hourly, daily, weekly, monthly")
    timezone: str | None = Field(default=None, description="IANA time zone the cron fields are read in")
    catch_up: CatchUp = Field(default="once", description="windows missed while no scheduler ran: "
                                                  "skip them, run once, or run each")
    max_catch_up: int = Field(default=24, ge=1, le=1000,
                              description="catch_up each: at most this many missed windows run")

    @field_validator("cron", mode="before")
    @classmethod
    def _cron(cls, value: Any) -> str:
        return cron_of(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value


def _from_text(value: Any) -> Any:
    """``schedule: daily`` / ``schedule: "0 7 * * *"`` -> the object form (a bad cron is
    reported at ``schedule`` itself)."""
    if isinstance(value, str):
        return {"cron": cron_of(value)}
    return value


#: the type of ``ProgramSpec.schedule``
ScheduleField = Annotated[Schedule | None, BeforeValidator(_from_text)]


class SchedulerConfig(BaseModel):
    """``ceap.yaml``'s ``scheduler:``: how ``ceap scheduler`` runs the programs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = Field(default="UTC", description="time zone of schedules that name none")
    dispatch: bool = Field(default=True, description="after running what is due, send what is due")
    poll: Duration = Field(default=timedelta(seconds=30), description="time between two looks at the clock")
    lease: Duration = Field(default=timedelta(seconds=60),
                            description="how long the active scheduler's claim lasts unrenewed")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("poll")
    @classmethod
    def _poll(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("poll must be positive")
        return value

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 3:
            raise ValueError("lease must be at least 3s")
        return value


__all__ = ["WORDS", "CatchUp", "Schedule", "ScheduleField", "SchedulerConfig", "cron_of", "zone"]

"""The ``delivery:`` section of ``ceap.yaml``: consent modes, quiet hours,
frequency caps, suppressions and templates. Every field has a documented
default (see docs/policies.md and docs/templates.md)."""

from __future__ import annotations

import re
from datetime import time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ceap.durations import Duration
from ceap.factories import empty_dict, empty_list

ConsentMode = Literal["opt_in", "opt_out", "exempt"]
#: categories that bypass quiet hours and marketing caps unless configured otherwise
EXEMPT_CATEGORIES = ("transactional", "security")
#: channels every project has unless it configures them otherwise
DEFAULT_CHANNELS: dict[str, dict[str, Any]] = {"inapp": {"type": "inapp"}}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_time(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 21:00 as the sexagesimal number 1260
        return time(value // 60, value % 60)
    if isinstance(value, str):
        match = _CLOCK.match(value.strip())
        if not match:
            raise ValueError(f"expected a time of day such as '08:00', got {value!r}")
        return time(int(match.group(1)), int(match.group(2)))
    return value


class CategoryModes(_Closed):
    """How consent is checked for one channel, per category of action.

    ``opt_in``: only with an explicit grant; ``opt_out``: unless revoked;
    ``exempt``: consent is not checked."""

    marketing: ConsentMode = "opt_out"
    transactional: ConsentMode = "exempt"
    security: ConsentMode = "exempt"

    def mode(self, category: str) -> ConsentMode:
        # any category that is not one of the two declared exemptions is marketing
        if category in ("transactional", "security"):
            return self.transactional if category == "transactional" else self.security
        return self.marketing


def _default_modes() -> dict[str, CategoryModes]:
    phone = CategoryModes(marketing="opt_in", transactional="opt_out", security="opt_out")
    return {
        "email": CategoryModes(marketing="opt_out"),
        "sms": phone,
        "voice": phone,
        "push": CategoryModes(marketing="opt_out"),
        "inapp": CategoryModes(marketing="opt_out"),
    }


class ConsentConfig(_Closed):
    channels: dict[str, CategoryModes] = Field(
        default_factory=_default_modes,
        description="channel name -> consent mode per category; channels not listed use 'default'")
    default: CategoryModes = Field(default_factory=CategoryModes)
    topic_field: str = Field("topic", description="payload key naming the topic; else the program name")

    @field_validator("channels", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        """Listing one channel keeps the documented defaults of the others."""
        if isinstance(value, dict):
            return {**_default_modes(), **value}
        return value

    def modes(self, channel: str) -> CategoryModes:
        return self.channels.get(channel, self.default)


class SendingHours(_Closed):
    """Sending is allowed from ``send_from`` to ``send_until`` in the customer's
    local time (``send_until`` earlier than ``send_from`` wraps past midnight)."""

    send_from: time = time(8, 0)
    send_until: time = time(21, 0)

    @field_validator("send_from", "send_until", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        return _parse_time(value)

    @model_validator(mode="after")
    def _not_empty(self) -> SendingHours:
        if self.send_from == self.send_until:
            raise ValueError("send_from and send_until must differ")
        return self


def _default_quiet_hours() -> dict[str, SendingHours]:
    return {"sms": SendingHours(), "voice": SendingHours()}


class CapRule(_Closed):
    max: int = Field(ge=0, description="at most this many deliveries ...")
    window: Duration = Field(description="... in this rolling window (e.g. 1d, 7d)")

    @model_validator(mode="after")
    def _positive(self) -> CapRule:
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        return self

    def label(self) -> str:
        from ceap.durations import format_duration

        return f"{self.max}/{format_duration(self.window)}"


class CapsConfig(_Closed):
    """Frequency caps over rolling windows. Only non-exempt (marketing) deliveries
    count and are capped."""

    per_customer: list[CapRule] = Field(default_factory=empty_list, description="all channels, all programs")
    per_channel: dict[str, list[CapRule]] = Field(default_factory=empty_dict, description="channel -> rules")
    per_program: list[CapRule] = Field(default_factory=empty_list, description="each program, per customer")
    programs: dict[str, list[CapRule]] = Field(
        default_factory=empty_dict, description="program -> rules replacing per_program for it")
    exempt_channels: list[str] = Field(
        default_factory=empty_list,
        description="channels whose deliveries neither count toward nor are held by any cap "
                    "(internal ones: a CRM task, an ops alert)")

    def program_rules(self, program: str) -> list[CapRule]:
        return self.programs.get(program, self.per_program)

    def longest(self) -> timedelta:
        rules = [*self.per_customer, *self.per_program]
        for group in (*self.per_channel.values(), *self.programs.values()):
            rules.extend(group)
        return max((r.window for r in rules), default=timedelta(0))

    @property
    def empty(self) -> bool:
        return self.longest() == timedelta(0)


class SuppressionConfig(_Closed):
    marketing_only_reasons: list[str] = Field(
        default_factory=lambda: ["complaint"],
        description="suppressions with these reasons stop marketing only; the others stop everything")


class ChannelLimits(_Closed):
    """Rendered size limits (characters; ``total``: UTF-8 bytes of all parts)."""

    title: int | None = None
    body: int | None = None
    total: int | None = None


def _default_limits() -> dict[str, ChannelLimits]:
    return {
        "sms": ChannelLimits(body=1600),
        "voice": ChannelLimits(body=3000),
        "push": ChannelLimits(title=100, body=1000),
        "inapp": ChannelLimits(title=200, body=10_000),
        "email": ChannelLimits(title=255, total=256 * 1024),
        "default": ChannelLimits(title=1000, total=256 * 1024),
    }


class TemplatesConfig(_Closed):
    dir: str = Field("templates", description="folder of template YAML files, relative to the project")
    default_locale: str | None = Field(None, description="locale of the files' top-level parts")
    unsubscribe_url: str | None = Field(
        None, description="public URL of the unsubscribe endpoint; links are '<url>?token=...'")
    preferences_url: str | None = Field(
        None, description="public URL of the preference page (/v1/preferences/page); templates get "
                          "'preferences_url', a signed link to it")
    require_unsubscribe: bool = Field(
        True, description="refuse to render marketing e-mail without an unsubscribe link")
    limits: dict[str, ChannelLimits] = Field(default_factory=_default_limits)
    channel_kinds: dict[str, str] = Field(
        default_factory=empty_dict, description="channel name -> template part (e.g. ses: email)")
    render_timeout: float = Field(1.0, gt=0, description="seconds one part may take to render")
    max_template_bytes: int = Field(256 * 1024, gt=0)

    @field_validator("limits", mode="before")
    @classmethod
    def _merge_limits(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {**_default_limits(), **value}
        return value

    def limits_for(self, kind: str) -> ChannelLimits:
        return self.limits.get(kind) or self.limits.get("default") or ChannelLimits()


class DeliveryConfig(_Closed):
    exempt_categories: list[str] = Field(
        default_factory=lambda: list(EXEMPT_CATEGORIES),
        description="categories that bypass quiet hours and frequency caps")
    default_timezone: str = Field("UTC", description="for customers without a valid time zone")
    consent: ConsentConfig = Field(default_factory=ConsentConfig)
    quiet_hours: dict[str, SendingHours] = Field(
        default_factory=_default_quiet_hours,
        description="channel -> allowed sending hours; default 08:00-21:00 for sms and voice")
    caps: CapsConfig = Field(default_factory=CapsConfig)
    suppression: SuppressionConfig = Field(default_factory=SuppressionConfig)
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig)

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @classmethod
    def coerce(cls, value: DeliveryConfig | dict[str, Any] | None) -> DeliveryConfig:
        if value is None:
            return cls()
        if isinstance(value, DeliveryConfig):
            return value
        return cls.model_validate(value)


__all__ = ["EXEMPT_CATEGORIES", "CapRule", "CapsConfig", "CategoryModes", "ChannelLimits",
           "ConsentConfig", "ConsentMode", "DeliveryConfig", "SendingHours", "SuppressionConfig",
           "TemplatesConfig"]

"""The program spec: one use case, from source to action."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ceap.connectors.base import ConnectorConfig
from ceap.durations import Duration
from ceap.factories import empty_dict, empty_list
from ceap.filters.base import FilterConfig
from ceap.model import ActionType
from ceap.realtime.spec import EscalationStep, StateFeature
from ceap.scorers.base import ScorerConfig
from ceap.spec.digest import NEVER_HELD, Digest
from ceap.spec.experiment import Experiment
from ceap.spec.journey import Journey, check_event_types, journey_problem
from ceap.spec.schedule import ScheduleField
from ceap.sqlexpr import check_expression

Mode = Literal["live", "shadow", "paused"]
Category = Literal["marketing", "transactional", "security"]
NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
#: program names that would collide with a hash key of the experiments (docs/experiments.md)
RESERVED_NAMES = ("global_control",)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selection(Strict):
    """Who among the scored rows becomes a candidate."""

    threshold: float | None = Field(None, description="keep rows scoring at least this")
    top_k: int | None = Field(None, gt=0, description="at most this many candidates per run")
    one_per_customer: bool = Field(True, description="keep each customer's best row only")
    dedup_window: Duration = Field(timedelta(days=1),
                                   description="re-runs inside one window add no duplicates")
    reasons: int = Field(3, ge=0, le=20,
                         description="top feature contributions kept per candidate (0: none)")

    @model_validator(mode="after")
    def _window_positive(self) -> Selection:
        if self.dedup_window.total_seconds() <= 0:
            raise ValueError("dedup_window must be positive")
        return self


class Action(Strict):
    """What the candidate gets, where, and when."""

    type: ActionType
    channels: list[str] = Field(min_length=1)
    deliver: Literal["fallback", "all"] = Field(
        "fallback", description="fallback: channels in order until one works; all: every channel")
    template: str | None = None
    payload: dict[str, Any] = Field(default_factory=empty_dict)
    payload_columns: list[str] = Field(default_factory=empty_list,
                                       description="row columns copied into the payload")
    items: int = Field(0, ge=0, le=100,
                       description="recommended items put in the payload (recommending scorers)")
    category: Category = "marketing"
    delay: Duration = Field(timedelta(0), description="not_before = creation + delay")
    cancel_on: list[str] = Field(default_factory=empty_list,
                                 description="event types that cancel the customer's pending actions")
    escalation: list[EscalationStep] = Field(
        default_factory=empty_list, description="later steps on other channels, until a cancel_on event")
    expiry: Duration = Field(timedelta(days=7), description="expires_at = not_before + expiry")
    digest: Digest | None = Field(None, description="hold the messages and send one digest per "
                                  "customer (docs/digests.md)")
    channels_if: dict[str, str] = Field(
        default_factory=empty_dict,
        description="channel -> boolean column: the channel is kept only on rows where it is true")

    @field_validator("channels_if")
    @classmethod
    def _conditions(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        channels = info.data.get("channels")
        if not value or channels is None:  # no channels: that field's own error says so
            return value
        for channel, column in value.items():
            if channel not in channels:
                raise ValueError(f"{channel!r} is not in action.channels")
            if not column.isidentifier():
                raise ValueError(f"{channel}: {column!r} is not a column name")
        if all(c in value for c in channels):
            raise ValueError("at least one channel must have no condition, so that every "
                             "candidate has a channel")
        return value


class Goal(Strict):
    """What counts as the program having worked: goal events within a window of the touch."""

    event: list[str] = Field(min_length=1, description="event type(s) that count as a conversion")
    within: Duration = Field(description="attribution window, from the touch (see docs/outcomes.md)")
    value: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                              description="the event attribute holding the conversion's value")

    @field_validator("event", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("event")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        check_event_types(value)
        if len(set(value)) != len(value):
            raise ValueError("an event type is listed twice")
        return value

    @field_validator("within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("within must be positive")
        return value



class ProgramSpec(Strict):
    """A program, as validated from its YAML file.

    The plugin fields are typed by their base configs here; ``ceap.spec.loading``
    validates them against the installed plugins' own config models.
    """

    # built when first used: a program is validated by its subclass (ceap.spec.loading),
    # so this model's own validator is seldom needed
    model_config = ConfigDict(defer_build=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    mode: Mode = "live"
    priority: int = 0
    schedule: ScheduleField = Field(None, description="when `ceap scheduler` runs it: a cron "
                                    "expression, hourly/daily/weekly/monthly, or {cron, timezone, "
                                    "catch_up, max_catch_up}")
    source: ConnectorConfig
    state: dict[str, StateFeature] = Field(default_factory=empty_dict,
                                           description="real-time: per-customer features over event time")
    features: dict[str, str] = Field(default_factory=empty_dict,
                                     description="name -> SQL expression over source columns")
    filters: list[FilterConfig] = Field(default_factory=empty_list)
    scorer: ScorerConfig | None = None
    selection: Selection = Field(default_factory=Selection)
    action: Action
    experiment: Experiment = Field(default_factory=Experiment)
    goal: Goal | None = Field(None, description="goal events that count as conversions (docs/outcomes.md)")
    journey: Journey | None = Field(None, description="steps each selected customer walks through "
                                    "(docs/journeys.md)")

    @field_validator("features")
    @classmethod
    def _features_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for name, expr in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"feature name {name!r} must be a plain identifier")
            try:
                check_expression(expr)
            except ValueError as exc:
                raise ValueError(f"feature {name!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _fits_its_mode(self) -> ProgramSpec:
        if self.schedule is not None and getattr(self.source, "type", None) == "events":
            raise ValueError("schedule: a real-time program (source type events) runs on every event "
                             "under `ceap worker`, not on a timetable; remove schedule")
        if self.state and getattr(self.source, "type", None) != "events":
            raise ValueError("state: only a real-time program (source type events) has state "
                             "features (docs/realtime.md); compute a batch program's columns with "
                             "features, or remove state")
        if (getattr(self.source, "type", None) == "events" and not getattr(self.source, "on", None)
                and not any(f.kind == "absence" for f in self.state.values())):
            raise ValueError('source.on: name the event types that trigger the program ("on": '
                             "[login]); without them only an absence timer (a state feature "
                             "with absence) runs it, and it has none")
        return self

    @model_validator(mode="after")
    def _digest_fits(self) -> ProgramSpec:
        action = self.action
        if action.digest is None:
            return self
        if action.category in NEVER_HELD:
            raise ValueError(f"action.digest: a {action.category} message is never held in a "
                             "digest (it is sent at once); remove digest or use category marketing")
        if action.escalation:
            raise ValueError("action.digest: escalation steps cannot be held in a digest; "
                             "remove one of them")
        if action.delay:
            raise ValueError("action.digest: a digest message goes when its digest is due; "
                             "remove delay")
        return self

    @model_validator(mode="after")
    def _journey_fits(self) -> ProgramSpec:
        if self.journey is None:
            return self
        for field, given in (("escalation", self.action.escalation), ("cancel_on", self.action.cancel_on),
                             ("delay", self.action.delay),
                             ("digest", self.action.digest)):
            if given:
                raise ValueError(f"action.{field}: a journey program times its messages with its "
                                 "steps (send, wait_for, exit_on); remove action." + field)
        if self.action.channels_if:
            raise ValueError("action.channels_if: a journey's send steps name their own channels "
                             "(send.channels); remove action.channels_if")
        problem = journey_problem(self.journey)
        if problem:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _unique_filter_ids(self) -> ProgramSpec:
        seen: set[str] = set()
        for f in self.filters:
            if f.id in seen:
                raise ValueError(f"filter id {f.id!r} is used twice")
            seen.add(f.id)
        return self

    @model_validator(mode="after")
    def _experiment_fits(self) -> ProgramSpec:
        """Checks that need the rest of the program; messages start with the field."""
        exp, category = self.experiment, self.action.category
        if self.name in RESERVED_NAMES:
            raise ValueError(f"name: {self.name!r} is reserved (the global control group's hash "
                             "key); choose another name")
        if exp.global_control and category != "marketing":
            raise ValueError(f"experiment.global_control: {category} programs are exempt from the "
                             "global control group; remove the field or set it to false")
        if exp.learn and getattr(self.scorer, "type", None) != "river":
            raise ValueError("experiment.learn: needs a river scorer (the online model learns "
                             "from the outcomes)")
        if exp.learn:
            from ceap.ml.artefacts import parse_ref

            ref = parse_ref(str(getattr(self.scorer, "model", "")))
            if ref is None or ref.version is not None:
                raise ValueError("experiment.learn: scorer.model must name a registry model "
                                 "without a version (e.g. 'churn' or 'churn@latest'), so the "
                                 "program scores with each new version it learns")
        for field, wanted in (("bandit", exp.bandit is not None), ("learn", exp.learn)):
            if wanted and self.goal is None:
                raise ValueError(f"experiment.{field}: needs a goal (goal: {{event: ..., within: ...}}): "
                                 "it learns from the conversions attributed to the program")
        if exp.learn and self.mode == "shadow":
            raise ValueError("experiment.learn: a shadow program sends nothing, so its outcomes "
                             "say nothing about its messages")
        return self

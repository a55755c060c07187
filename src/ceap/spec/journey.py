"""A program's ``journey``: steps a customer walks through after the program selects them.

Each step has an ``id`` and exactly one kind: ``send`` (a message through the dispatcher),
``wait_for`` (events within a window, or a plain delay), ``branch`` (an SQL condition over
the entry's score, context and payload) or ``exit``. A step names where to go next; what it
does not name goes to the following step in the list (``end`` after the last one). See
docs/journeys.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ceap.durations import Duration
from ceap.factories import empty_dict, empty_list
from ceap.sqlexpr import check_expression

STEP_ID = r"^[a-z][a-z0-9_]*$"
#: the target that ends the journey (reason ``completed``)
END = "end"
EVENT_TYPE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_event_types(names: list[str]) -> list[str]:
    """``names`` if each is an event type as events carry them (``ceap.realtime.events``)."""
    for name in names:
        if not EVENT_TYPE.fullmatch(name):
            raise ValueError(f"{name!r} is not an event type (letters, digits, _ . : -)")
    return names


class Send(_Strict):
    """A message: a candidate the dispatcher delivers (the program's ``action`` fills in
    what is not given here)."""

    channels: list[str] | None = Field(None, min_length=1, description="default: action.channels")
    template: str | None = Field(None, description="default: action.template")
    payload: dict[str, Any] = Field(default_factory=empty_dict, description="merged over the entry's payload")


class WaitFor(_Strict):
    """Wait up to ``within`` for one of ``events``; each event type names its next step,
    ``timeout`` where to go when none came. No events: a plain delay."""

    events: dict[str, str | None] = Field(
        default_factory=empty_dict, description="event type -> next step (null: the following step)")
    within: Duration
    timeout: str | None = Field(None, description="next step when no event came in time")

    @field_validator("events", mode="before")
    @classmethod
    def _list_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        return dict.fromkeys(value) if isinstance(value, list) else value

    @field_validator("events")
    @classmethod
    def _types(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        check_event_types(list(value))
        return value

    @field_validator("within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("within must be positive")
        return value


class Branch(_Strict):
    """``if`` an SQL condition over the entry (``score``, context columns, payload fields)
    holds, go to ``then``, else to ``else``."""

    if_: str = Field(alias="if", description="an SQL condition, e.g. \"score >= 0.8\"")
    then: str | None = None
    else_: str | None = Field(None, alias="else")

    @field_validator("if_")
    @classmethod
    def _parses(cls, value: str) -> str:
        return check_expression(value)


class Step(_Strict):
    """One step of a journey."""

    id: str = Field(pattern=STEP_ID)
    send: Send | None = None
    wait_for: WaitFor | None = None
    branch: Branch | None = None
    exit: str | None = Field(None, min_length=1, max_length=200, description="the exit reason")
    next: str | None = Field(None, description="the next step after a send (default: the following)")

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}")
        if self.next is not None and given[0] != "send":
            raise ValueError(f"next: only a send step has next; a {given[0]} step names its own targets")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)


KINDS = ("send", "wait_for", "branch", "exit")


class Journey(_Strict):
    """``journey: {steps: [...], exit_on: [...], reentry: ...}``."""

    steps: list[Step] = Field(min_length=1, max_length=100)
    exit_on: list[str] = Field(default_factory=empty_list,
                               description="event types that end the journey at once")
    reentry: Literal["never", "always"] | Duration = Field(
        "never", description="never, always, or a duration after the last entry")

    @field_validator("exit_on", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("exit_on")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        return check_event_types(value)

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)

    @property
    def first(self) -> str:
        return self.steps[0].id

    def targets(self, index: int) -> Iterator[tuple[str, str]]:
        """``(label, target)`` of every way out of step ``index``, defaults filled in."""
        step = self.steps[index]
        following = self.steps[index + 1].id if index + 1 < len(self.steps) else END
        if step.send is not None:
            yield "", step.next or following
        elif step.wait_for is not None:
            for kind, target in step.wait_for.events.items():
                yield kind, target or following
            yield "timeout", step.wait_for.timeout or following
        elif step.branch is not None:
            yield "then", step.branch.then or following
            yield "else", step.branch.else_ or following

    def edges(self) -> dict[str, list[tuple[str, str]]]:
        return {s.id: list(self.targets(i)) for i, s in enumerate(self.steps)}

    def event_types(self) -> set[str]:
        """Every event type the journey reads (waits and exits)."""
        return {*self.exit_on, *(k for s in self.steps if s.wait_for for k in s.wait_for.events)}

    def version(self) -> str:
        """A short hash of the steps, exits and re-entry rule: what a customer entered with."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def journey_problem(journey: Journey) -> str | None:
    """The first graph mistake, as ``journey.<field>: message`` (None: the graph is sound):
    a step id used twice or reserved, a target naming no step, an unreachable step, a
    cycle that passes no ``wait_for`` (it would loop without end within one tick)."""
    ids = [s.id for s in journey.steps]
    for i, step_id in enumerate(ids):
        if step_id == END:
            return f"journey.steps[{i}].id: {END!r} is reserved (the target that ends the journey)"
        if step_id in ids[:i]:
            return f"journey.steps[{i}].id: step id {step_id!r} is used twice"
    for i, step in enumerate(journey.steps):
        for field, target in _named_targets(step):
            if target != END and target not in ids:
                close = [n for n in ids if _similar(n, target)]
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return (f"journey.steps[{i}].{field}: unknown step {target!r}{hint}; "
                        f"name a step id or {END!r}")
    edges = journey.edges()
    seen, todo = {journey.first}, [journey.first]
    while todo:
        for _, target in edges[todo.pop()]:
            if target != END and target not in seen:
                seen.add(target)
                todo.append(target)
    for i, step_id in enumerate(ids):
        if step_id not in seen:
            return (f"journey.steps[{i}]: step {step_id!r} is unreachable from the first step "
                    f"{journey.first!r}")
    cycle = _cycle_without_wait(journey, edges)
    if cycle:
        return (f"journey.steps: the cycle {' -> '.join(cycle)} passes no wait_for step; add one "
                "(a customer would go round it without end)")
    return None


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.7


def _named_targets(step: Step) -> Iterator[tuple[str, str]]:
    if step.next is not None:
        yield "next", step.next
    if step.wait_for is not None:
        for kind, target in step.wait_for.events.items():
            if target is not None:
                yield f"wait_for.events.{kind}", target
        if step.wait_for.timeout is not None:
            yield "wait_for.timeout", step.wait_for.timeout
    if step.branch is not None:
        for field, target in (("then", step.branch.then), ("else", step.branch.else_)):
            if target is not None:
                yield f"branch.{field}", target


def _cycle_without_wait(journey: Journey, edges: dict[str, list[tuple[str, str]]]) -> list[str] | None:
    """A cycle through steps that are not ``wait_for`` steps, if any (as its step ids)."""
    waits = {s.id for s in journey.steps if s.wait_for is not None}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for _, target in edges[node]:
            if target == END or target in waits:
                continue
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for step in journey.steps:
        if step.id not in waits and step.id not in state:
            found = visit(step.id)
            if found:
                return found
    return None


class JourneysConfig(BaseModel):
    """``ceap.yaml``'s ``journeys:``: how ``ceap worker`` and ``ceap scheduler`` tick journeys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_every: Duration = Field(default=timedelta(seconds=5),
                                 description="the worker and the scheduler tick the journeys at most "
                                             "this often (by their clock); 0s: they do not")
    lease: Duration = Field(default=timedelta(seconds=6),
                            description="how long a ticker's claim on the store lasts unrenewed (a "
                                        "running tick renews it every third of it; a killed "
                                        "ticker holds the others back this long)")

    @field_validator("tick_every")
    @classmethod
    def _every(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 0:
            raise ValueError("tick_every must not be negative")
        return value

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 3:
            raise ValueError("lease must be at least 3s")
        return value

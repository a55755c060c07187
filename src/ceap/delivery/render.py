"""The renderer contract, and the plain renderer used when a program names no template."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ceap.delivery.model import Profile
from ceap.model import Candidate


@dataclass(frozen=True)
class Rendered:
    title: str
    body: str
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Renderer(Protocol):
    def render(self, candidate: Candidate, channel: str, profile: Profile | None) -> Rendered: ...


class PlainRenderer:
    """Title from the program's name, body from the payload: readable, never blank."""

    def __init__(self) -> None:
        #: program name -> title (a batch's candidates share a few programs)
        self._titles: dict[str, str] = {}

    def render(self, candidate: Candidate, channel: str, profile: Profile | None) -> Rendered:
        program = candidate.program
        title = self._titles.get(program)
        if title is None:
            title = self._titles[program] = program.replace("_", " ").capitalize()
        lines = [f"{k.replace('_', ' ')}: {v}" for k, v in candidate.payload.items()
                 if not isinstance(v, (list, dict))]
        # fields set directly, as ``Rendered(...)`` would (a frozen dataclass's ``__init__``
        # costs a few microseconds, and a batch renders thousands)
        r = object.__new__(Rendered)
        r.__dict__.update(title=title, body="\n".join(lines) or title, html=None, headers={})
        return r

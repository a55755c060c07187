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

    def render(self, candidate: Candidate, channel: str, profile: Profile | None) -> Rendered:
        title = candidate.program.replace("_", " ").capitalize()
        lines = [f"{k.replace('_', ' ')}: {v}" for k, v in candidate.payload.items()
                 if not isinstance(v, (list, dict))]
        return Rendered(title=title, body="\n".join(lines) or title)

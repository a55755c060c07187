"""Domain records shared by the pipeline, the stores and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ActionType = Literal["request", "inform", "recommend", "alert", "offer", "protect"]
CandidateStatus = Literal["pending", "held_out", "shadow", "dispatched", "sent", "suppressed",
                          "failed", "shadowed", "expired", "cancelled",
                          "digest", "in_digest", "digested",  # docs/digests.md
                          "journey", "entered"]  # docs/journeys.md
SERVABLE_STATUSES = ("pending", "dispatched", "sent")
RunStatus = Literal["succeeded", "failed", "skipped"]

DEFAULT_TENANT = "default"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Candidate:
    """A customer (and, where the program has one, a subject) chosen for an action."""

    id: int
    tenant_id: str
    program: str
    run_id: str
    customer_id: str
    subject_id: str | None
    context: dict[str, Any]
    action_type: str
    channels: list[str]
    template: str | None
    category: str
    score: float
    model: str
    reasons: dict[str, Any] | None
    payload: dict[str, Any]
    status: str
    priority: int
    created_at: datetime
    not_before: datetime
    expires_at: datetime
    dedup_key: str
    holdout: bool
    version: int
    #: why it has its status (a policy, the winner of a cap, a quiet-hours deferral, a
    #: cancelling event, the last error); None until something sets it
    status_reason: str | None = None
    updated_at: datetime | None = None
    #: ``treatment``, ``holdout`` (the program's) or ``global_control`` (docs/experiments.md)
    arm: str = "treatment"
    #: the A/B/n variant (for control candidates: the one they would have had)
    variant: str | None = None
    #: the scorer's inputs at scoring time, kept only for programs with ``experiment.learn``
    features: dict[str, Any] | None = None


@dataclass
class RunRecord:
    """One batch run of one program, with its funnel."""

    run_id: str
    tenant_id: str
    program: str
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    funnel: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a run's write did: new candidates, and those already there (dedup)."""

    inserted: int
    duplicates: int
    quarantined: int = 0


@dataclass(frozen=True)
class CandidateQuery:
    """A lookup of candidates; ``customer_id`` lookups use an index."""

    tenant_id: str = DEFAULT_TENANT
    customer_id: str | None = None
    program: str | None = None
    channel: str | None = None
    status: str | None = None
    include_expired: bool = False
    limit: int = 100
    #: several customers at once (the serving API's batch form)
    customer_ids: tuple[str, ...] | None = None
    #: only what a client app may show now: due, not held out, not shadow, not done with
    servable: bool = False


@dataclass
class InboxItem:
    """A message in a customer's in-app inbox."""

    tenant_id: str
    customer_id: str
    idempotency_key: str
    program: str
    title: str
    body: str
    payload: dict[str, Any] = field(default_factory=dict)
    candidate_id: int | None = None
    id: int | None = None
    created_at: datetime | None = None
    read_at: datetime | None = None

"""``ceap preview``: what one customer would get from a program, per channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.render import Rendered
from ceap.delivery.templates.renderer import TemplateRenderer
from ceap.delivery.templates.sandbox import TemplateError
from ceap.model import Candidate, utcnow


def preview(project_dir: str | Path, program_name: str, customer_id: str, store: Any,
            config: DeliveryConfig | dict[str, Any] | None = None,
            tenant: str | None = None) -> dict[str, Rendered]:
    """What ``customer_id`` would get from ``program_name``, per channel.

    Uses the customer's latest candidate of the program when the store has one,
    else a candidate built from the program's action (payload columns it cannot
    know show as ``<column>``). Unsubscribe and tracked links are real when the URL and
    signing key are configured, placeholders otherwise."""
    from ceap.delivery.profiles import load_profiles
    from ceap.model import CandidateQuery
    from ceap.spec import load_program, load_project

    project = load_project(project_dir)
    cfg = DeliveryConfig.coerce(config if config is not None else getattr(project, "delivery", None))
    tenant = tenant or project.tenant
    folder = project.programs_dir()
    path = next((p for p in (folder / f"{program_name}.yaml", folder / f"{program_name}.yml")
                 if p.exists()), None)
    if path is None:
        from ceap.spec.loading import program_file_named

        path = program_file_named(folder, program_name)  # a program named apart from its file
    if path is None:
        raise TemplateError(f"program {program_name!r} not found in {folder}")
    spec = load_program(path)
    found = store.candidates(CandidateQuery(tenant_id=tenant, customer_id=customer_id,
                                            program=spec.name, include_expired=True, limit=1000))
    if getattr(spec.action, "digest", None) is not None:  # the digest message, not an item
        messages = [c for c in found if "digest" in (c.payload or {})]
        candidate = (max(messages, key=lambda c: (c.created_at, c.id)) if messages
                     else _digest_sample(spec, tenant, customer_id, found))
    else:
        candidate = (max(found, key=lambda c: (c.created_at, c.id)) if found
                     else _sample(spec, tenant, customer_id))
    profile = load_profiles(store, [(tenant, customer_id)]).get((tenant, customer_id))
    # tracked links as they would be sent (signed when the key is set); nothing is recorded
    renderer = TemplateRenderer.from_config(cfg, project.base_dir, preview=True, tracking=project.tracking)
    return {ch: renderer.render(candidate, ch, profile) for ch in candidate.channels}


def _sample(spec: Any, tenant: str, customer_id: str) -> Candidate:
    action = spec.action
    now = utcnow()
    payload = {**{col: f"<{col}>" for col in action.payload_columns}, **action.payload}
    if action.items:
        payload["items"] = []
    return Candidate(id=0, tenant_id=tenant, program=spec.name, run_id="preview", customer_id=customer_id,
                     subject_id=None, context={}, action_type=action.type, channels=list(action.channels),
                     template=action.template, category=action.category, score=0.0, model="preview",
                     reasons=None, payload=payload, status="preview", priority=spec.priority,
                     created_at=now, not_before=now, expires_at=now + action.expiry,
                     dedup_key="preview", holdout=False, version=0)



def _digest_sample(spec: Any, tenant: str, customer_id: str, found: list[Candidate]) -> Candidate:
    """A digest message of the customer's held candidates (or of two sample items)."""
    held = sorted((c for c in found if c.status in ("digest", "in_digest")),
                  key=lambda c: (c.created_at, c.id))
    base = _sample(spec, tenant, customer_id)
    sample = {k: v for k, v in base.payload.items() if k not in spec.action.payload}
    items = [{"candidate_id": c.id, "program": c.program, "subject_id": c.subject_id,
              "created_at": c.created_at.isoformat(), "score": c.score, "payload": c.payload,
              "context": c.context} for c in held] or [
        {"candidate_id": 0, "program": spec.name, "subject_id": None,
         "created_at": base.created_at.isoformat(), "score": 0.0, "payload": sample, "context": {}}
        for _ in range(2)]
    shown = spec.action.digest.max_items
    base.payload = {**spec.action.payload, "digest": {
        "key": spec.action.digest.key_for(spec.name), "count": len(items), "items": items[:shown],
        "more": max(len(items) - shown, 0), "window_start": base.created_at.isoformat(),
        "window_end": base.created_at.isoformat()}}
    return base

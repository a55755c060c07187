"""Consent and subscriptions per channel and topic."""

from __future__ import annotations

from collections.abc import Sequence

from ceap.delivery.consent_store import ALL_TOPICS, load_consent
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.model import Decision
from ceap.delivery.policies.common import add_note, by_tenant, topic_of
from ceap.delivery.policy import PolicyContext, without
from ceap.model import Candidate


class ConsentPolicy:
    """Drops each channel the customer has not consented to for the candidate's
    topic (the payload's ``topic``, else the program name). Per channel and
    category the mode is ``opt_in`` (needs a grant), ``opt_out`` (unless
    revoked) or ``exempt``. A row for the exact topic wins over the channel's
    ``*`` row. With no channel left the candidate is suppressed as ``consent:<channel>``."""

    name = "consent"

    def __init__(self, config: DeliveryConfig | None = None):
        self.config = config or DeliveryConfig()

    def apply(self, candidates: Sequence[Candidate], decisions: list[Decision],
              ctx: PolicyContext) -> list[Decision]:
        consent = self.config.consent
        needed = {c.tenant_id for c, d in zip(candidates, decisions, strict=True)
                  if any(consent.modes(ch).mode(c.category) != "exempt" for ch in d.send)}
        if not needed:
            return decisions
        rows: dict[str, dict[tuple[str, str, str], bool]] = {}
        with ctx.store.tx() as tx:
            for tenant, group in by_tenant(candidates).items():
                if tenant in needed:
                    rows[tenant] = load_consent(tx, tenant, (c.customer_id for c in group))
        out = []
        for c, d in zip(candidates, decisions, strict=True):
            found = rows.get(c.tenant_id, {})
            topic = topic_of(c, consent.topic_field)
            for ch in d.send:
                mode = consent.modes(ch).mode(c.category)
                if mode == "exempt":
                    continue
                state = found.get((c.customer_id, ch, topic))
                if state is None:
                    state = found.get((c.customer_id, ch, ALL_TOPICS))
                if mode == "opt_out" and state is False:
                    d = add_note(without(d, ch, f"{self.name}:{ch}"),
                                 f"{ch} consent revoked for topic {topic}")
                elif mode == "opt_in" and state is not True:
                    why = "revoked" if state is False else "no opt-in"
                    d = add_note(without(d, ch, f"{self.name}:{ch}"), f"{ch}: {why} for topic {topic}")
            out.append(d)
        return out

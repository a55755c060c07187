"""The suppression list: addresses never to use again on a channel (hard
bounces, complaints, a STOP from a number no profile had)."""

from __future__ import annotations

from collections.abc import Sequence

from ceap.delivery.consent_store import load_suppressions, normalize_address
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.model import Decision
from ceap.delivery.policies.common import add_note, by_tenant, is_exempt
from ceap.delivery.policy import PolicyContext, without
from ceap.model import Candidate


class SuppressionList:
    """Drops a channel whose address is suppressed. A row matches when its
    channel is the channel's name, its address kind (``email``, ``phone``) or
    ``*``; channels without an address are keyed by the customer id. Reasons in
    ``suppression.marketing_only_reasons`` (default: complaint) stop marketing
    only; the others (hard_bounce, sms_stop, manual...) stop every category."""

    name = "suppression"

    def __init__(self, config: DeliveryConfig | None = None):
        self.config = config or DeliveryConfig()

    def _address(self, c: Candidate, channel: str, ctx: PolicyContext) -> tuple[str | None, str | None]:
        kind = ctx.addresses.get(channel)
        if not kind:
            return None, c.customer_id
        profile = ctx.profile(c)
        return kind, normalize_address(getattr(profile, kind, None) if profile else None, kind)

    def apply(self, candidates: Sequence[Candidate], decisions: list[Decision],
              ctx: PolicyContext) -> list[Decision]:
        wanted: dict[str, set[str]] = {}
        for c, d in zip(candidates, decisions, strict=True):
            for ch in d.send:
                _, address = self._address(c, ch, ctx)
                if address:
                    wanted.setdefault(c.tenant_id, set()).add(address)
        if not wanted:
            return decisions
        rows: dict[str, dict[tuple[str, str], str]] = {}
        with ctx.store.tx() as tx:
            for tenant in by_tenant(candidates):
                if wanted.get(tenant):
                    rows[tenant] = load_suppressions(tx, tenant, wanted[tenant])
        marketing_only = set(self.config.suppression.marketing_only_reasons)
        out = []
        for c, d in zip(candidates, decisions, strict=True):
            found = rows.get(c.tenant_id, {})
            exempt = is_exempt(c.category, self.config)
            for ch in d.send:
                kind, address = self._address(c, ch, ctx)
                if not address:
                    continue
                for key in (ch, kind, "*"):
                    reason = found.get((key, address)) if key else None
                    if reason and not (exempt and reason in marketing_only):
                        d = add_note(without(d, ch, f"{self.name}:{ch}"),
                                     f"{ch} address suppressed ({reason})")
                        break
            out.append(d)
        return out

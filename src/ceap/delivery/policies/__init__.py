"""The delivery policies: suppressions, consent, quiet hours and frequency caps.

``default_policies(config)`` gives them in the order the dispatcher should run
them (after its built-in ``Reachable``)::

    Dispatcher(store, channels, policies=default_policies(project.delivery))

Suppressions and consent drop channels first, so quiet hours only defer what
could be sent, and the caps only count what will be sent.
"""

from __future__ import annotations

from typing import Any

from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.policies.caps import FrequencyCaps
from ceap.delivery.policies.common import is_exempt, topic_of
from ceap.delivery.policies.consent import ConsentPolicy
from ceap.delivery.policies.quiet_hours import QuietHours
from ceap.delivery.policies.suppression import SuppressionList
from ceap.delivery.policy import Policy


def default_policies(config: DeliveryConfig | dict[str, Any] | None = None) -> list[Policy]:
    """Suppression list, consent, quiet hours, frequency caps (with arbitration)."""
    cfg = DeliveryConfig.coerce(config)
    return [SuppressionList(cfg), ConsentPolicy(cfg), QuietHours(cfg), FrequencyCaps(cfg)]


__all__ = ["ConsentPolicy", "FrequencyCaps", "QuietHours", "SuppressionList", "default_policies",
           "is_exempt", "topic_of"]

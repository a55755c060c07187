"""A deleted customer's real-time state in Redis (``ceap.yaml``'s ``state:``): their
event log and their pending absence timers (see ``ceap.realtime.state_redis``)."""

from __future__ import annotations

import json


def erase_redis_state(url: str, tenant: str, customer: str, namespace: str = "ceap") -> int:
    """Delete the customer's event log key and timers; returns how many entries went."""
    from ceap.realtime.state_redis import connect

    client = connect(url)
    removed = int(client.delete(f"{namespace}:{tenant}:log:{customer}"))
    for key in client.scan_iter(match=f"{namespace}:timers:*", count=500):
        gone = [m for m in client.zrange(key, 0, -1) if json.loads(m)[:2] == [tenant, customer]]
        if gone:
            removed += int(client.zrem(key, *gone))
    return removed

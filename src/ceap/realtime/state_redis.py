"""Per-customer state in Redis, shared by several workers: the same interface as
``ceap.realtime.state`` (an event log and absence timers).

- ``ceap:{tenant}:seen:{event_id}``: a key per event id (SET NX, with a TTL), for dedup;
- ``ceap:{tenant}:log:{customer}``: a sorted set of the customer's events, scored by
  event time (microseconds), trimmed to the retention and expiring with it;
- ``ceap:stream:{stream}:timers:{program}#{feature}[:{partition}]``: a sorted set of
  absence timers scored by firing time, per stream and partition (two streams both have
  partition ``""``, or the same Kinesis shard ids); the key without ``stream:{stream}:``
  (armed before timers had a stream) is taken from too, by the worker of any stream;
  taking due timers is one atomic Lua call, so two workers never fire one twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from ceap.model import utcnow
from ceap.realtime.events import EVENT_SCHEMA
from ceap.realtime.timers import LEASE, TimerRow, arrived, fresh_attributes, timer_events

#: for each pair of keys (KEYS[i], KEYS[i + 1]): take the due timers (KEYS[i], scores <
#: ARGV[1]) and the claims whose lease ran out (KEYS[i + 1], scores < ARGV[2]), holding them
#: all in KEYS[i + 1] until ARGV[3]; one list of taken members per pair
_TAKE_DUE = """
local out = {}
for i = 1, #KEYS, 2 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
  local stale = redis.call('ZRANGEBYSCORE', KEYS[i + 1], '-inf', ARGV[2])
  for _, m in ipairs(due) do redis.call('ZADD', KEYS[i + 1], ARGV[3], m) end
  for _, m in ipairs(stale) do redis.call('ZADD', KEYS[i + 1], ARGV[3], m) end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1]) end
  for _, m in ipairs(stale) do table.insert(due, m) end
  table.insert(out, due)
end
return out
"""


def _us(ts: datetime) -> int:
    return int((ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts).timestamp() * 1_000_000)


def _from_us(value: float) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=int(value))


def connect(url: str) -> Any:
    try:
        import redis
    except ImportError:
        from ceap.errors import PluginError

        raise PluginError("the Redis state store needs redis-py: pip install 'ceap[redis]'") from None
    return redis.Redis.from_url(url)


class RedisEventLog:
    def __init__(self, client: Any, retention: timedelta = timedelta(days=31), namespace: str = "ceap"):
        self.r = client
        self.retention = retention
        self.ns = namespace

    def seen(self, tenant_ids: Sequence[str], event_ids: Sequence[str]) -> set[tuple[str, str]]:
        pipe = self.r.pipeline(transaction=False)
        for t, e in zip(tenant_ids, event_ids, strict=True):
            pipe.exists(f"{self.ns}:{t}:seen:{e}")
        return {(t, e) for (t, e), hit in zip(zip(tenant_ids, event_ids, strict=True), pipe.execute(),
                                               strict=True) if hit}

    def append(self, events: pa.Table, partitions: pa.Array | None = None) -> None:
        """Add events (idempotent by event id); ``partitions`` are not kept (with a Redis
        state backend the worker keeps no keyed state in memory)."""
        if not events.num_rows:
            return
        ttl = int(self.retention.total_seconds())
        pipe = self.r.pipeline(transaction=False)
        touched: set[str] = set()
        for row in events.to_pylist():
            pipe.set(f"{self.ns}:{row['tenant_id']}:seen:{row['event_id']}", 1, nx=True, ex=ttl)
            if not row["customer_id"]:
                continue
            key = f"{self.ns}:{row['tenant_id']}:log:{row['customer_id']}"
            member = json.dumps([row["event_id"], row["type"], row["attributes"]])
            pipe.zadd(key, {member: _us(row["ts"])})
            touched.add(key)
        for key in touched:
            pipe.expire(key, ttl)
        pipe.execute()

    def history(self, keys: Iterable[tuple[str, str]], since: datetime,
                types: Iterable[str] | None = None) -> pa.Table:
        """Logged events of these keys at or after ``since``; with ``types``, of those types."""
        keys = sorted(set(keys))
        kinds = None if types is None else set(types)
        pipe = self.r.pipeline(transaction=False)
        for tenant, customer in keys:
            pipe.zrangebyscore(f"{self.ns}:{tenant}:log:{customer}", _us(since), "+inf", withscores=True)
        out: dict[str, list[Any]] = {n: [] for n in EVENT_SCHEMA.names}
        for (tenant, customer), members in zip(keys, pipe.execute(), strict=True):
            for member, score in members:
                event_id, etype, attributes = json.loads(member)
                if kinds is not None and etype not in kinds:
                    continue
                for name, value in (("event_id", event_id), ("tenant_id", tenant),
                                    ("customer_id", customer), ("type", etype),
                                    ("ts", _from_us(score)), ("attributes", attributes)):
                    out[name].append(value)
        return pa.table(out, schema=EVENT_SCHEMA)

    def prune(self, before: datetime) -> int:
        return 0  # keys expire with the retention; each trims itself when written


class RedisTimers:
    """Absence timers: a sorted set per stream, program feature and partition, scored by
    fire time (``stream`` None: the keys without a stream alone)."""

    def __init__(self, client: Any, log: RedisEventLog, stream: str | None = None):
        self.r = client
        self.log = log
        self.stream = stream
        self._take = client.register_script(_TAKE_DUE)
        self.claimed: dict[str, list[tuple[str, bytes]]] = {}

    def _key(self, program: str, partition: str, stream: str | None = None) -> str:
        ns = self.log.ns if stream is None else f"{self.log.ns}:stream:{stream}"
        return f"{ns}:timers:{program}" + (f":{partition}" if partition else "")

    def add(self, program: str, rows: Sequence[TimerRow]) -> None:
        by_key: dict[str, dict[str, int]] = {}
        for t, c, e, a, f, p in rows:
            member = json.dumps([t, c, e, _us(a), _us(f)])
            by_key.setdefault(self._key(program, p, self.stream), {})[member] = _us(f)
        for key, members in by_key.items():
            self.r.zadd(key, members)

    def fire(self, program: str, feature: str, missing: str, partition: str, before: datetime,
             fresh: pa.Table | None = None) -> pa.Table:
        """Take the timers due strictly before ``before`` for a lease (atomically), with those
        whose lease ran out; keep those whose ``missing`` event did not come in ``(after ts,
        fire at]`` (logged, or in ``fresh``). ``done`` deletes the taken ones."""
        now = _us(utcnow())
        keys = [self._key(program, partition, self.stream)]
        if self.stream is not None:  # and those armed before timers had a stream
            keys.append(self._key(program, partition))
        lists = self._take(keys=[k for key in keys for k in (key, f"{key}:claimed")],
                           args=[f"({_us(before)}", f"({now}", now + int(LEASE.total_seconds() * 1e6)])
        pairs = [(f"{key}:claimed", m) for key, members in zip(keys, lists, strict=True) for m in members]
        if not pairs:
            return EVENT_SCHEMA.empty_table()
        self.claimed.setdefault(program, []).extend(pairs)
        taken = [json.loads(m) for _, m in pairs]
        batch = arrived(fresh, missing)
        armed = fresh_attributes(fresh, {m[2] for m in taken})  # armed by events not logged yet
        pipe = self.r.pipeline(transaction=False)
        for tenant, customer, _e, after_us, fire_us in taken:
            pipe.zrangebyscore(f"{self.log.ns}:{tenant}:log:{customer}", after_us, fire_us, withscores=True)
        fired: list[tuple[str, str, str, datetime, str]] = []
        for (tenant, customer, event_id, after_us, fire_us), logged in zip(taken, pipe.execute(),
                                                                           strict=True):
            start, came = armed.get(event_id), False
            for member, score in logged:
                mid, etype, attributes = json.loads(member)
                if mid == event_id:
                    start = attributes
                elif etype == missing and score > after_us:
                    came = True
            came = came or any(after_us < _us(ts) <= fire_us for ts in batch.get((tenant, customer), ()))
            if start is not None and not came:
                fired.append((tenant, customer, event_id, _from_us(fire_us), start))
        return timer_events(fired, feature)

    def done(self, program: str) -> None:
        """Delete the timers of ``program`` taken since the last call: their rows are stored."""
        taken = self.claimed.pop(program, [])
        pipe = self.r.pipeline(transaction=False)
        for key, member in taken:
            pipe.zrem(key, member)
        if taken:
            pipe.execute()

"""Redis Streams in a consumer group (``pip install 'ceap[redis]'``, Redis >= 6.2).

A poll first takes over messages that another consumer of the group has held
unacknowledged for longer than ``claim_idle`` seconds (XAUTOCLAIM: a killed
worker's messages; looked for at most every ``claim_idle / 4`` seconds, capped at
one second, and at once again while a look comes back full), then reads new ones
(XREADGROUP). ``commit`` acknowledges
(XACK). A worker restarted under the same ``consumer`` name first re-reads its
own pending messages.
"""

from __future__ import annotations

import json
import operator
import time
from collections.abc import Sequence
from itertools import repeat
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ceap.connectors.base import ConnectorConfig
from ceap.connectors.streams_common import Url, consumer_name, env_value, need
from ceap.errors import SourceError
from ceap.realtime.source import Received, StreamConfig, StreamConnector

REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisStreamsConfig(StreamConfig):
    type: Literal["redis_streams"] = "redis_streams"
    stream: str = Field(min_length=1, description="the stream key")
    url: Url = Field("redis://127.0.0.1:6379/0", description="Redis URL without a password")
    url_env: str | None = Field(None, description="environment variable holding the URL (with credentials)")
    field: str = Field("body", min_length=1, description="the entry field holding the message body")
    claim_idle: float = Field(30.0, gt=0, description=(
        "seconds after which another consumer's unacknowledged messages are taken over "
        "(keep it above a batch's processing time)"))
    start: Literal["earliest", "latest"] = Field("earliest", description="where a new group starts reading")
    maxlen: int | None = Field(None, gt=0, description="trim to about this many entries on publish")

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value.split("://", 1)[0] not in REDIS_SCHEMES or "://" not in value:
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value


class RedisStreamsConnector(StreamConnector[RedisStreamsConfig]):
    config_model: ClassVar[type[ConnectorConfig]] = RedisStreamsConfig

    def __init__(self, config: RedisStreamsConfig, context: Any = None):
        super().__init__(config, context)
        redis = need("redis", "redis_streams", "redis", "redis")
        url = env_value(config.type, config.url_env, "URL", self.context) if config.url_env else config.url
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=None)
        except ValueError:  # from url_env: the message names the variable, never the URL
            raise SourceError(f"redis stream {config.stream!r}: {config.url_env}: expected a redis://, "
                              "rediss:// or unix:// URL") from None
        self._errors = (redis.RedisError,)
        self.name = consumer_name(config.consumer)
        self._own_from: Any = "0"   # a restarted consumer first re-reads what it had not acknowledged
        self._claim_from = "0-0"
        self._claim_at = 0.0        # monotonic time of the next XAUTOCLAIM
        self._field = config.field.encode()
        try:
            self._redis.xgroup_create(config.stream, config.group,
                                      id="0" if config.start == "earliest" else "$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise SourceError(f"redis stream {config.stream!r}: {exc}") from None
        except redis.RedisError as exc:
            raise SourceError(f"redis stream {config.stream!r}: cannot connect: {exc}") from None

    def describe(self) -> str:
        return f"redis stream {self.config.stream} (group {self.config.group})"

    def _received(self, entries: Any) -> list[Received]:
        if not entries:
            return []
        try:  # every entry has its body field (the usual case): made in C, no Python call an
            # entry (a named tuple's own constructor is a Python function)
            ids, fields = zip(*entries, strict=True)
            bodies = map(operator.itemgetter(self._field), fields)
            return list(map(tuple.__new__, repeat(Received), zip(bodies, ids, repeat(""))))
        except (KeyError, TypeError):  # an entry deleted while pending, or another producer's
            pass
        out, gone = [], []
        for entry_id, fields in entries or []:
            if not fields:       # deleted from the stream while pending (None, or no fields:
                # an entry always has one): nothing to process
                gone.append(entry_id)
                continue
            body = fields.get(self._field)
            if body is None:     # written by another producer: the entry as a JSON object
                body = json.dumps({k.decode(): v.decode(errors="replace")
                                   for k, v in fields.items()}).encode()
            out.append(Received(body, entry_id))
        if gone:
            self._redis.xack(self.config.stream, self.config.group, *gone)
        return out

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        c, r = self.config, self._redis
        try:
            while self._own_from is not None:
                got = r.xreadgroup(c.group, self.name, {c.stream: self._own_from}, count=max_messages)
                entries = got[0][1] if got else []
                self._own_from = entries[-1][0] if entries else None
                own = self._received(entries)
                if own:
                    return own
            if time.monotonic() >= self._claim_at:
                start, claimed, *_ = r.xautoclaim(c.stream, c.group, self.name, int(c.claim_idle * 1000),
                                                  start_id=self._claim_from, count=max_messages)
                self._claim_from = start.decode() if isinstance(start, bytes) else str(start)
                full = len(claimed or []) >= max_messages
                self._claim_at = 0.0 if full else time.monotonic() + min(1.0, c.claim_idle / 4)
                taken = self._received(claimed)
                if taken:
                    return taken
            block = max(1, int(timeout * 1000)) if timeout > 0 else None
            got = r.xreadgroup(c.group, self.name, {c.stream: ">"}, count=max_messages, block=block)
            return self._received(got[0][1] if got else [])
        except self._errors as exc:
            raise SourceError(f"redis stream {c.stream!r}: {exc}") from None

    def commit(self, tokens: Sequence[Any]) -> None:
        if tokens:
            try:
                self._redis.xack(self.config.stream, self.config.group, *tokens)
            except self._errors as exc:
                raise SourceError(f"redis stream {self.config.stream!r}: commit failed: {exc}") from None

    def publish(self, bodies: Sequence[bytes]) -> None:
        c = self.config
        with self._redis.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(c.stream, {c.field: body}, maxlen=c.maxlen, approximate=True)
            pipe.execute()

    def lag(self) -> int | None:
        """Entries not yet delivered to the group plus those delivered and not acknowledged."""
        for g in self._redis.xinfo_groups(self.config.stream):
            if g["name"] in (self.config.group, self.config.group.encode()):
                return None if g.get("lag") is None else int(g["lag"]) + int(g["pending"])
        return None

    def close(self) -> None:
        c = self.config
        try:  # leave the group's consumer list tidy when nothing of ours is pending
            if not self._redis.xpending_range(c.stream, c.group, "-", "+", 1, consumername=self.name):
                self._redis.xgroup_delconsumer(c.stream, c.group, self.name)
        except self._errors:
            pass
        self._redis.close()

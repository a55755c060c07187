"""Amazon Kinesis Data Streams through boto3 (``pip install 'ceap[kinesis]'``).

Kinesis has no consumer groups on the broker side (the KCL builds them from
leases in DynamoDB). This connector is simpler: **one active worker per group**
reads every shard, and ``commit`` stores each shard's last sequence number in a
local SQLite file (``checkpoints``). The group's other workers sharing that file
(on the same host) stand by: the active one renews a lease at each poll, and
when it stops polling for ``lease`` seconds (killed) or closes, a standby takes
the lease and resumes every shard after its checkpoint. Uncommitted records
are read again then, or at a restart: at least once.

Shards are listed again every minute, so the shards of a resharding are read
too (without waiting for a parent shard to be finished first).
AWS credentials come from boto3's chain (environment, profile, role).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ceap.connectors.base import ConnectorConfig
from ceap.connectors.streams_common import body_keys, consumer_name, need
from ceap.errors import SourceError
from ceap.realtime.source import Received, StreamConfig, StreamConnector

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (stream TEXT, grp TEXT, shard TEXT, seq TEXT,
                                        PRIMARY KEY (stream, grp, shard));
CREATE TABLE IF NOT EXISTS leases (stream TEXT, grp TEXT, owner TEXT, expires REAL,
                                   PRIMARY KEY (stream, grp));
"""
_SHARD_REFRESH = 60.0
_ROUND = 0.2    # seconds between two reads of the shards (and lease checks)


class KinesisConfig(StreamConfig):
    type: Literal["kinesis"] = "kinesis"
    stream: str = Field(min_length=1, description="the stream name")
    region: str | None = Field(None, description="AWS region (default: boto3's)")
    endpoint_url: str | None = Field(None, description="another endpoint (a VPC endpoint, a local stub)")
    checkpoints: str = Field(".ceap/kinesis-checkpoints.db",
                             description="SQLite file of the group's checkpoints and lease")
    lease: float = Field(30.0, gt=0, description="seconds without a poll after which a standby worker "
                                                 "of the group takes over")
    start: Literal["earliest", "latest"] = Field("earliest", description="where a shard without a "
                                                                         "checkpoint starts")
    shards: int | None = Field(None, gt=0, description="create the stream with this many shards when missing")


class KinesisConnector(StreamConnector[KinesisConfig]):
    config_model: ClassVar[type[ConnectorConfig]] = KinesisConfig
    owns_partitions: ClassVar[bool] = True  # keyed state in memory (ceap.realtime.keyed)

    def __init__(self, config: KinesisConfig, context: Any = None):
        super().__init__(config, context)
        boto3 = need("boto3", config.type, "kinesis", "boto3")
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        self.name = consumer_name(config.consumer)
        self._client = boto3.session.Session().client("kinesis", region_name=config.region,
                                                      endpoint_url=config.endpoint_url)
        path = self.context.path(config.checkpoints)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.executescript(_SCHEMA)
        self._iterators: dict[str, str | None] = {}   # shard -> next iterator (None: shard finished)
        self._position: dict[str, str] = {}           # shard -> last sequence number read
        self._listed = 0.0
        self._closed = False
        self._next_round = 0.0
        if config.shards:
            self._create(config.shards)

    def describe(self) -> str:
        return f"kinesis stream {self.config.stream} (group {self.config.group})"

    def _create(self, shards: int) -> None:
        try:
            self._client.create_stream(StreamName=self.config.stream, ShardCount=shards)
        except self._client.exceptions.ResourceInUseException:
            return
        except self._errors as exc:
            raise SourceError(f"kinesis stream {self.config.stream!r}: {exc}") from None
        self._client.get_waiter("stream_exists").wait(StreamName=self.config.stream,
                                                      WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    # -- the lease: one active worker per group ---------------------------------

    def _hold_lease(self) -> bool:
        c, now = self.config, time.time()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT owner, expires FROM leases WHERE stream = ? AND grp = ?",
                             (c.stream, c.group)).fetchone()
            mine = row is None or row[0] == self.name or row[1] < now
            if mine:
                db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)",
                           (c.stream, c.group, self.name, now + c.lease))
        finally:
            db.execute("COMMIT")
        if not mine:
            self._iterators.clear()
            self._position.clear()   # when this worker gets the lease back, it starts at the checkpoints
        return mine

    # -- reading --------------------------------------------------------------------

    def _checkpoint(self, shard: str) -> str | None:
        row = self._db.execute("SELECT seq FROM checkpoints WHERE stream = ? AND grp = ? AND shard = ?",
                               (self.config.stream, self.config.group, shard)).fetchone()
        return (row[0].lstrip("0") or "0") if row else None

    def _iterator(self, shard: str, after: str | None) -> str:
        if after is not None:
            kind = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after}
        else:
            kind = {"ShardIteratorType": "TRIM_HORIZON" if self.config.start == "earliest" else "LATEST"}
        return str(self._client.get_shard_iterator(StreamName=self.config.stream, ShardId=shard,
                                                   **kind)["ShardIterator"])

    def _refresh_shards(self) -> None:
        if time.monotonic() - self._listed < _SHARD_REFRESH and self._iterators:
            return
        shards, token = [], None
        while True:
            page = self._client.list_shards(**({"NextToken": token} if token else
                                               {"StreamName": self.config.stream}))
            shards += [s["ShardId"] for s in page["Shards"]]
            token = page.get("NextToken")
            if not token:
                break
        for shard in shards:
            if shard not in self._iterators:
                self._iterators[shard] = self._iterator(shard, self._checkpoint(shard))
        self._listed = time.monotonic()

    def _read(self, max_messages: int) -> list[Received]:
        self._refresh_shards()
        out: list[Received] = []
        for shard, iterator in list(self._iterators.items()):
            if iterator is None or len(out) >= max_messages:
                continue
            try:
                page = self._client.get_records(ShardIterator=iterator,
                                                Limit=min(10_000, max_messages - len(out)))
            except self._client.exceptions.ExpiredIteratorException:   # unused for 5 minutes
                after = self._position.get(shard) or self._checkpoint(shard)
                self._iterators[shard] = self._iterator(shard, after)
                continue
            self._iterators[shard] = page.get("NextShardIterator")   # None: a closed shard, read to its end
            if page["Records"]:
                self._position[shard] = page["Records"][-1]["SequenceNumber"]
            out += [Received(r["Data"], (shard, r["SequenceNumber"]), shard) for r in page["Records"]]
        return out

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        deadline = time.monotonic() + timeout
        try:
            while True:
                now = time.monotonic()
                if now >= self._next_round:   # Kinesis allows 5 reads a second per shard
                    self._next_round = now + _ROUND
                    if self._hold_lease() and (got := self._read(max_messages)):
                        return got
                now = time.monotonic()
                if now >= deadline:
                    return []
                time.sleep(max(0.0, min(self._next_round, deadline) - now))
        except self._errors as exc:
            raise SourceError(f"kinesis stream {self.config.stream!r}: {exc}") from None

    def commit(self, tokens: Sequence[Any]) -> None:
        top: dict[str, int] = {}
        for shard, seq in tokens:
            top[shard] = max(int(seq), top.get(shard, -1))
        c = self.config
        self._db.executemany(   # sequence numbers padded, so the larger string is the later record
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?) ON CONFLICT (stream, grp, shard) "
            "DO UPDATE SET seq = max(seq, excluded.seq)",
            [(c.stream, c.group, shard, str(seq).zfill(64)) for shard, seq in top.items()])

    def publish(self, bodies: Sequence[bytes]) -> None:
        for start in range(0, len(bodies), 500):
            records = []
            for body in bodies[start:start + 500]:
                event_id, customer = body_keys(body)
                records.append({"Data": body, "PartitionKey": customer or event_id or uuid.uuid4().hex})
            for attempt in range(5):
                try:
                    answer = self._client.put_records(StreamName=self.config.stream, Records=records)
                except self._errors as exc:
                    raise SourceError(f"kinesis stream {self.config.stream!r}: {exc}") from None
                if not answer.get("FailedRecordCount"):
                    break
                records = [r for r, a in zip(records, answer["Records"], strict=True) if "ErrorCode" in a]
                time.sleep(0.1 * 2 ** attempt)   # throttled: the failed ones again, later
            else:
                raise SourceError(f"kinesis stream {self.config.stream!r}: {len(records)} record(s) not "
                                  "stored after 5 tries")

    def close(self) -> None:
        """Give the lease up, so a standby takes over at once."""
        if self._closed:
            return
        self._closed = True
        self._db.execute("DELETE FROM leases WHERE stream = ? AND grp = ? AND owner = ?",
                         (self.config.stream, self.config.group, self.name))
        self._db.close()

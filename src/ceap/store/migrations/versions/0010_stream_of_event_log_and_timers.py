"""The stream of each event-log row and absence timer: ``event_log.stream`` and
``timers.stream`` (nullable). A partition is named by its stream and its key: every
partitionless stream (Redis Streams, NATS, RabbitMQ, the embedded queue, a replay file)
is partition ``""``, and two Kinesis streams share shard ids, so the worker of one stream
restores, and fires the timers of, its own stream's rows only. Rows written before this
revision have no stream (NULL) and are read by every stream's worker, as before.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from ceap.store.migrations import add_columns, no_downgrade

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # no index: the worker's appends stay as cheap; the reads by partition scan as before
    for table in ("event_log", "timers"):
        add_columns(table, {"sqlite": [("stream", "TEXT")], "postgresql": [("stream", "TEXT")]})


downgrade = no_downgrade

"""A SQL store with its candidates also in DynamoDB: the mixed configuration.

``ceap.yaml``::

    store: postgresql://ceap@db/ceap          # runs, quarantine, inbox, outbox, consent
    candidate_store: dynamodb://ceap-candidates?region=eu-west-1

What goes where:

* ``write_run``: the candidates are put in DynamoDB first (conditional puts on
  the dedup key), then the SQL store writes the run, the same candidates and the
  quarantined rows in its one transaction, which is the run's commit point (the
  high-water mark of an incremental source moves with it). If the SQL write
  fails, the DynamoDB items this write added are deleted again; if the process
  dies in between, DynamoDB holds candidates of a run recorded as nothing, and
  the next run of the same rows writes them to SQL and finds them present in
  DynamoDB.
* ``candidates()`` (the serving API, ``ceap candidates``): DynamoDB. Their
  ``id`` is DynamoDB's (derived from the dedup key), not the SQL row's. A query
  with ``include_expired`` (history) reads the SQL copy instead.
* ``sweep_expired``: both (DynamoDB's TTL also removes expired items itself);
  the SQL copy keeps the candidates of programs with held-out ones, which the
  uplift report compares, as every store does.
* Everything else (runs, quarantine, inbox, high-water marks, ``tx()`` for the
  dispatcher's outbox, consent, caps): the SQL store. The dispatcher claims
  candidates from the SQL copy; a status it sets there (sent, failed,
  cancelled) is not copied to DynamoDB, whose items keep the status they were
  written with until they expire.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, ClassVar, Literal

import pyarrow as pa

from ceap.errors import PluginError
from ceap.model import Candidate, CandidateQuery, InboxItem, RunRecord, WriteResult
from ceap.plugin import PluginContext
from ceap.store.base import Store, StoreConfig, open_store
from ceap.store.dynamodb import DynamoDbStore
from ceap.store.tx import Tx


class SplitStoreConfig(StoreConfig):
    """``url``: the SQL store; ``candidates``: the ``dynamodb://`` table."""

    type: Literal["split"] = "split"
    candidates: str


class SplitStore(Store[SplitStoreConfig]):
    """Delegates to a SQL store, with candidates and serving in DynamoDB."""

    config_model: ClassVar[type[StoreConfig]] = SplitStoreConfig
    remote_reads: ClassVar[bool] = True

    def __init__(self, config: SplitStoreConfig, context: PluginContext | None = None):
        super().__init__(config, context)
        serving = open_store(config.candidates, migrate=False, context=context)
        if not isinstance(serving, DynamoDbStore):
            serving.close()
            raise PluginError(f"candidate_store {config.candidates!r}: only dynamodb:// is supported")
        self.serving = serving
        self.sql = open_store(config.url, migrate=False, context=context)

    def migrate(self) -> None:
        self.sql.migrate()
        self.serving.migrate()

    def write_run(self, run: RunRecord, candidates: pa.Table,
                  quarantine: pa.Table | None = None) -> WriteResult:
        put = self.serving.put_new(candidates)
        try:
            return self.sql.write_run(run, candidates, quarantine)
        except BaseException:
            self.serving.delete(put)
            raise

    def record_run(self, run: RunRecord) -> None:
        self.sql.record_run(run)

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        """Current candidates from DynamoDB; with ``include_expired``, the SQL copy, which
        keeps history (the control groups and what uplift is measured against) after
        DynamoDB's TTL has removed the serving items."""
        if query.include_expired:
            return self.sql.candidates(query)
        return self.serving.candidates(query)

    def last_cursor(self, tenant_id: str, program: str) -> dict[str, Any] | None:
        return self.sql.last_cursor(tenant_id, program)

    def runs(self, tenant_id: str, program: str | None = None, limit: int = 20) -> list[RunRecord]:
        return self.sql.runs(tenant_id, program, limit)

    def quarantined(self, tenant_id: str, run_id: str) -> list[dict[str, str]]:
        return self.sql.quarantined(tenant_id, run_id)

    def sweep_expired(self, now: datetime, tenant_id: str | None = None) -> int:
        self.serving.sweep_expired(now, tenant_id)
        return self.sql.sweep_expired(now, tenant_id)

    def inbox_add(self, items: list[InboxItem]) -> list[bool]:
        return self.sql.inbox_add(items)

    def inbox_list(self, tenant_id: str, customer_id: str,
                   unread_only: bool = False) -> list[InboxItem]:
        return self.sql.inbox_list(tenant_id, customer_id, unread_only)

    def inbox_mark_read(self, tenant_id: str, customer_id: str, ids: list[int]) -> int:
        return self.sql.inbox_mark_read(tenant_id, customer_id, ids)

    def tx(self) -> AbstractContextManager[Tx]:
        return self.sql.tx()

    def close(self) -> None:
        try:
            self.serving.close()
        finally:
            self.sql.close()

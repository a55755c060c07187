"""The store contract: candidates with TTL, runs with funnels, quarantine, inbox."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ceap.errors import PluginError
from ceap.model import Candidate, CandidateQuery, InboxItem, RunRecord, WriteResult, utcnow
from ceap.plugin import Plugin, PluginConfig, PluginContext
from ceap.store.tx import Tx

if TYPE_CHECKING:
    import pyarrow as pa


class StoreConfig(PluginConfig):
    """A store is configured by its URL (``sqlite:///path``, ``postgresql://...``)."""

    url: str


T = TypeVar("T", bound=StoreConfig)


class ServingReads(Protocol):
    """The serving API's two hot reads, awaited on the event loop (``Store.serving_reads``)."""

    async def candidates(self, tenant_id: str, customer_id: str, channel: str | None,
                         program: str | None, limit: int) -> list[dict[str, Any]]:
        """A customer's servable candidates, best first, as the API shows them."""
        ...

    async def inbox(self, tenant_id: str, customer_id: str,
                    unread_only: bool) -> list[dict[str, Any]]:
        """A customer's inbox messages, newest first, as the API shows them."""
        ...


class Store(Plugin[T]):
    """Where candidates, runs, quarantined rows and inbox messages live.

    ``write_run`` is atomic: the run record, its candidates and its
    quarantined rows commit together or not at all. Candidates are unique per
    ``(tenant_id, dedup_key)``; a second write of the same key is counted as a
    duplicate and changes nothing.
    """

    kind: ClassVar[str] = "store"
    config_model: ClassVar[type[StoreConfig]] = StoreConfig
    #: URL schemes this store answers to.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: "now" for the store's own time checks (expiry in ``candidates``, read and record
    #: times): the process's clock, never the database server's, so the store agrees with
    #: the dispatcher and the API on what has expired. Tests may set a ``FakeClock``.
    clock: Callable[[], datetime] = staticmethod(utcnow)
    #: whether a read waits on a server (PostgreSQL, DynamoDB): the API then runs it in its
    #: thread pool, so the event loop serves other requests meanwhile; an embedded store's
    #: read (SQLite) is cheaper run in place
    remote_reads: ClassVar[bool] = False

    def serving_reads(self) -> ServingReads | None:
        """The serving API's hot reads run on the event loop (PostgreSQL:
        ``ceap.store.pg_serving``), or None: the API then calls ``candidates`` and
        ``inbox_list`` (in place, or in its read threads: ``remote_reads``)."""
        return None

    def migrate(self) -> None:
        """Create tables and indexes if missing."""
        raise NotImplementedError

    def write_run(
        self, run: RunRecord, candidates: pa.Table, quarantine: pa.Table | None = None
    ) -> WriteResult:
        """Write a run, its candidates (see ``ceap.store.schema``) and quarantine, atomically."""
        raise NotImplementedError

    def record_run(self, run: RunRecord) -> None:
        """Record a run that wrote no candidates (failed or skipped)."""
        raise NotImplementedError

    def candidates(self, query: CandidateQuery) -> list[Candidate]:
        raise NotImplementedError

    def last_cursor(self, tenant_id: str, program: str) -> dict[str, Any] | None:
        """The high-water mark of the program's last succeeded run with one (its funnel's
        ``cursor``), or None: an incremental source reads only the rows past it."""
        raise NotImplementedError

    def runs(self, tenant_id: str, program: str | None = None, limit: int = 20) -> list[RunRecord]:
        raise NotImplementedError

    def quarantined(self, tenant_id: str, run_id: str) -> list[dict[str, str]]:
        """Rows a run set aside, each as ``{"row": json, "reason": text}``."""
        raise NotImplementedError

    def sweep_expired(self, now: datetime, tenant_id: str | None = None) -> int:
        """Delete candidates whose ``expires_at`` has passed; return how many.

        Held-out candidates stay: they are the control group uplift is measured against;
        so do the treated candidates of a program with held-out candidates (the other side
        of the comparison); so do candidates held for a digest (``digest``, ``in_digest``)."""
        raise NotImplementedError

    def inbox_add(self, items: list[InboxItem]) -> list[bool]:
        """Add messages to in-app inboxes, atomically. A known idempotency key is
        skipped; the result says, per item, whether it was added."""
        raise NotImplementedError

    def inbox_list(
        self, tenant_id: str, customer_id: str, unread_only: bool = False
    ) -> list[InboxItem]:
        raise NotImplementedError

    def inbox_mark_read(self, tenant_id: str, customer_id: str, ids: list[int]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""

    def tx(self) -> AbstractContextManager[Tx]:
        """A transaction (see ``ceap.store.tx``): committed on success, rolled back on error.

        The outbox and the delivery policies use it, so their SQL is written once."""
        raise NotImplementedError


def open_store(url: str, migrate: bool = True, context: PluginContext | None = None,
               candidates: str | None = None) -> Store:
    """Open the store whose plugin claims ``url``'s scheme (relative SQLite paths
    start at ``context.base_dir``). ``candidates`` (a ``dynamodb://`` URL) puts the
    candidates and their serving there too (see ``ceap.store.split``)."""
    if candidates:
        from ceap.store.split import SplitStore

        split: Store = SplitStore.from_dict({"type": "split", "url": url,
                                             "candidates": candidates}, context)
        if migrate:
            split.migrate()
        return split
    from ceap.registry import default_registry

    scheme = url.split(":", 1)[0].split("+", 1)[0]
    registry = default_registry()
    registry.load_all("store")  # stores answer to URL schemes, not names: load them (broken ones drop out)
    for name in registry.names("store"):
        cls = registry.get("store", name)
        if scheme in cls.schemes:
            store: Store = cls.from_dict({"type": name, "url": url}, context)
            if migrate:
                store.migrate()
            return store
    known = sorted(s for n in registry.names("store") for s in registry.get("store", n).schemes)
    raise PluginError(f"store URL {url!r}: no store for scheme {scheme!r} (known: {', '.join(known)})")

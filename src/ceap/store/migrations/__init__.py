"""Versioned schema migrations of the SQL stores (Alembic), for SQLite and PostgreSQL.

The revisions live in ``versions/`` (``0001_baseline.py`` is the schema of the last
release without them); ``alembic_version`` in the database records where it stands.
``upgrade`` brings a store to the newest revision (the stores call it at open),
``status`` says where it stands and ``offline_sql`` prints the SQL for a new database.
Adding a table: docs/operations.md#schema-migrations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

#: a transaction-level lock that serialises concurrent upgrades of one PostgreSQL database
ADVISORY_LOCK = 4242


def add_columns(table: str, columns: dict[str, list[tuple[str, str]]]) -> None:
    """For a revision's ``upgrade()``: add the columns ``table`` lacks, ``columns`` being
    ``{dialect: [(name, type), ...]}``. A column already there (a database made by a release
    that added it at open) is left alone; offline (``--sql``) every column is printed."""
    from alembic import context, op
    from sqlalchemy import inspect

    dialect = context.get_context().dialect.name
    have = set() if context.is_offline_mode() else {
        c["name"] for c in inspect(op.get_bind()).get_columns(table)}
    for name, kind in columns[dialect]:
        if name not in have:
            op.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def execute_for_dialect(statements: dict[str, list[str]]) -> None:
    """For a revision's ``upgrade()``: run ``statements[dialect]`` (``sqlite`` or
    ``postgresql``) in order."""
    from alembic import context, op

    for statement in statements[context.get_context().dialect.name]:
        op.execute(statement)


def no_downgrade() -> None:
    """A revision's ``downgrade()``: schema changes are not undone; restore a backup."""
    raise NotImplementedError("restore a backup instead")


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("path_separator", "os")
    return config


def head() -> str:
    """The newest revision."""
    from alembic.script import ScriptDirectory

    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


@dataclass(frozen=True)
class Status:
    current: str | None  #: None: a database made before versioned migrations, or an empty one
    head: str
    pending: list[str]  #: revisions still to apply, oldest first

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def _run(store: Any, work: Any) -> Any:
    """``work(connection)`` on a SQLAlchemy connection to ``store``'s database."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool, StaticPool

    from ceap.store.postgres import PostgresStore
    from ceap.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):  # the store's own connection (also for ":memory:")
        engine = create_engine("sqlite://", creator=lambda: store._conn, poolclass=StaticPool)
        with store._lock, engine.connect() as conn:
            return work(conn)
    if isinstance(store, PostgresStore):
        rest = store.config.url.split(":", 1)[1]
        engine = create_engine("postgresql+psycopg:" + rest, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})"))
                return work(conn)
        finally:
            engine.dispose()
    raise TypeError(f"{type(store).__name__} has no SQL schema to migrate")


def _status(conn: Connection) -> Status:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    current = MigrationContext.configure(conn).get_current_revision()
    newest = script.get_current_head()
    assert newest is not None
    pending = [r.revision for r in script.iterate_revisions(newest, current)]
    return Status(current, newest, pending[::-1])


def status(store: Any) -> Status:
    """Where ``store``'s database stands."""
    return _run(store, _status)  # type: ignore[no-any-return]


def newest_file() -> str:
    """The newest revision by file name (``versions/<NNNN>_<what>.py``, numbered in order)."""
    return max(p.name.split("_", 1)[0] for p in (Path(__file__).parent / "versions").glob("[0-9]*_*.py"))


def _at_newest(store: Any) -> bool:
    """Whether ``store`` stands at the newest revision, asked on its own connection, so an
    up-to-date store opens without loading Alembic."""
    try:
        with store._lock:
            row = store._conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except Exception:  # no table yet, or a store without this connection: ask Alembic
        return False
    return row is not None and row[0] == newest_file()


def upgrade(store: Any) -> Status:
    """Apply the pending revisions (none: nothing happens); the status before."""
    if _at_newest(store):
        return Status(newest_file(), newest_file(), [])
    from alembic import command

    def work(conn: Connection) -> Status:
        before = _status(conn)
        if before.pending:
            config = _config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return before

    return _run(store, work)  # type: ignore[no-any-return]


def offline_sql(dialect: str, out: Any) -> None:
    """Write the SQL that builds a new database at the newest revision (``sqlite`` or
    ``postgresql``) to the text stream ``out``."""
    from alembic import command

    config = _config()
    config.attributes["dialect"] = dialect
    config.output_buffer = out
    command.upgrade(config, "head", sql=True)

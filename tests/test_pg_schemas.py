"""The tests' PostgreSQL schemas (``tests/pg_schemas.py``): a schema handed out again holds
no row, its sequences start over, one whose shape a test changed is told apart, and what a
test left connected to its schema is cut off from it."""

from __future__ import annotations

import psycopg
import pytest

from ceap.store import open_store
from ceap.testing import make_candidates
from tests.conftest import PG_BASE, PgSchemas
from tests.pg_schemas import empty, is_empty, shape, url_of

pytestmark = pytest.mark.service("postgres")


def _schema(url: str) -> str:
    return url.split("search_path%3D", 1)[1].split("%20", 1)[0]


def test_pg_url_is_at_the_newest_revision_with_no_row(pg_url: str) -> None:
    from ceap.store.migrations import newest_file, status

    store = open_store(pg_url, migrate=False)
    try:
        assert status(store).up_to_date and status(store).current == newest_file()
    finally:
        store.close()
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        assert is_empty(conn, _schema(pg_url))


def test_an_emptied_schema_has_no_row_and_its_ids_start_over(pg_url: str, pg_empty_url: str) -> None:
    from ceap.model import RunRecord, utcnow

    now = utcnow()
    schema, fresh = _schema(pg_url), _schema(pg_empty_url)
    open_store(pg_empty_url).close()  # the same revision, migrated here
    store = open_store(pg_url)
    try:
        store.write_run(RunRecord("r1", "default", "p", "succeeded", now), make_candidates(3, now=now))
    finally:
        store.close()
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        first_ids = [i for (i,) in conn.execute(f"SELECT id FROM {schema}.candidates ORDER BY id")]
        assert not is_empty(conn, schema) and shape(conn, schema) == shape(conn, fresh)
        empty(conn, schema)
        assert is_empty(conn, schema)
        assert [v for (v,) in conn.execute(f"SELECT version_num FROM {schema}.alembic_version")] == \
            [v for (v,) in conn.execute(f"SELECT version_num FROM {fresh}.alembic_version")]
    store = open_store(pg_url)
    try:
        store.write_run(RunRecord("r1", "default", "p", "succeeded", now), make_candidates(3, now=now))
    finally:
        store.close()
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        assert [i for (i,) in conn.execute(f"SELECT id FROM {schema}.candidates ORDER BY id")] == first_ids


@pytest.mark.parametrize("change", [
    "CREATE TABLE {s}.extra (x int)",
    "ALTER TABLE {s}.candidates ADD COLUMN extra int",
    "CREATE INDEX extra ON {s}.candidates (score)",
    "ALTER TABLE {s}.candidates ALTER COLUMN template SET DEFAULT 'x'",
    "CREATE FUNCTION {s}.extra() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "UPDATE {s}.alembic_version SET version_num = '0001'",
])
def test_a_changed_schema_is_told_apart(pg_url: str, change: str) -> None:
    """``done`` hands a schema out again only if its shape is a built one's."""
    schema = _schema(pg_url)
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        built = shape(conn, schema)
        conn.execute(change.format(s=schema))
        assert shape(conn, schema) != built

def test_what_a_test_left_connected_to_its_schema_cannot_reach_the_next_test() -> None:
    """A connection still open on a schema a test is done with is ended, and the schema
    renamed, before another test gets it."""
    schemas = PgSchemas(ahead=1)
    try:
        schema = schemas.take()
        stray = psycopg.connect(url_of(PG_BASE, schema), autocommit=True)
        assert stray.execute("SELECT count(*) FROM candidates").fetchone() == (0,)
        schemas.done(schema)
    finally:
        schemas.close()  # waits for the builder to handle every line, then drop what it made
    with pytest.raises(psycopg.OperationalError):
        stray.execute("SELECT count(*) FROM candidates")
    stray.close()
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        gone = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        assert gone == (0,)

"""The tests' PostgreSQL schemas, built ahead and cleaned behind, in a process of their own.

Creating a schema's ~100 tables and indexes, and dropping them again, keeps PostgreSQL
waiting (on files, not CPU) for most of a second per test. This process builds schemas at
the newest revision the way a user's first open does (``open_store`` migrates an empty
schema), ``AHEAD`` of the tests that take them. A schema a test is done with is cleaned for
another test: the connections that name it (``application_name``, set by ``url_of``) are
ended, it is renamed (what a thread or process the test left behind still does goes to a
schema that is gone, as after a drop), every table's rows but ``alembic_version``'s are
deleted and every sequence is back at its start. It is handed out ``LAG`` schemas later if it
is still empty and its tables, columns, indexes, constraints, sequences, functions, types
and triggers are exactly those of a schema it built; otherwise it is dropped. A process, not
a thread of the test run: Alembic keeps module-level state, and tests migrate SQLite stores
all the time.

Protocol (lines): it prints the name of each schema it readies (``AHEAD`` at start, then one
for each ``take`` it reads), or ``!`` and the error (newlines as ``\\n``). ``done NAME``:
clean ``NAME`` for another test, or drop it; ``drop NAME``: drop it. At the end of its input
it drops every schema it made. Run by ``tests/conftest.py``:
``python tests/pg_schemas.py BASE_URL AHEAD``.
"""

from __future__ import annotations

import sys
import traceback
import uuid
from collections import deque
from typing import Any

#: how many cleaned schemas wait before one is handed out again (then checked again)
LAG = 2
#: what a schema holds, its name replaced by "S": two schemas alike give the same rows
SHAPE = """
SELECT 'class', c.relname, c.relkind::text, '' FROM pg_class c WHERE c.relnamespace = %(ns)s
UNION ALL SELECT 'column', c.relname, a.attname, format_type(a.atttypid, a.atttypmod) || ' '
  || a.attnotnull::text || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE c.relnamespace = %(ns)s AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL SELECT 'index', c.relname, '', pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = %(ns)s
UNION ALL SELECT 'constraint', conname, conrelid::regclass::text, pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = %(ns)s
UNION ALL SELECT 'sequence', c.relname, s.seqstart::text, s.seqincrement::text
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = %(ns)s
UNION ALL SELECT 'function', proname, '', pg_get_function_identity_arguments(oid)
  FROM pg_proc WHERE pronamespace = %(ns)s
UNION ALL SELECT 'type', typname, '', '' FROM pg_type WHERE typnamespace = %(ns)s
UNION ALL SELECT 'trigger', t.tgname, c.relname, '' FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = %(ns)s AND NOT t.tgisinternal
"""


def url_of(base: str, schema: str) -> str:
    """``base`` with its search_path set to ``schema``, its connections named after it
    (``base`` has no query string)."""
    return f"{base}?options=-csearch_path%3D{schema}%20-capplication_name%3D{schema}"


def end_connections(conn: Any, schema: str) -> None:
    """End the other connections named after ``schema`` and wait (up to 10 s each) for them to go."""
    conn.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                 "WHERE application_name = %s AND pid <> pg_backend_pid()", (schema,))


def shape(conn: Any, schema: str) -> list[tuple[str, ...]]:
    """What ``schema`` holds (``SHAPE``) and the revision it records, sorted."""
    ns = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()[0]
    rows = [tuple(str(v).replace(schema, "S") for v in row) for row in conn.execute(SHAPE, {"ns": ns})]
    rows += conn.execute(f"SELECT 'revision', version_num, '', '' FROM {schema}.alembic_version").fetchall()
    return sorted(rows)


def empty(conn: Any, schema: str) -> None:
    """Delete every row of ``schema``'s tables but ``alembic_version``'s; sequences to their start."""
    tables = [t for (t,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> 'alembic_version'",
        (schema,))]
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")  # no foreign-key order
        for table in tables:
            conn.execute(f'DELETE FROM {schema}."{table}"')
        conn.execute("SELECT setval(s.seqrelid, s.seqstart, false) FROM pg_sequence s "
                     "JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = %s", (schema,))


def is_empty(conn: Any, schema: str) -> bool:
    """Whether no table of ``schema`` but ``alembic_version`` has a row."""
    tables = [t for (t,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename <> 'alembic_version'",
        (schema,))]
    any_row = " OR ".join(f'EXISTS (SELECT 1 FROM {schema}."{t}")' for t in tables) or "false"
    return not conn.execute(f"SELECT {any_row}").fetchone()[0]


def main(base: str, ahead: int) -> None:
    import psycopg

    from ceap.store import open_store

    conn = psycopg.connect(base, autocommit=True)
    conn.execute("SET lock_timeout = '60s'")  # a connection a test left inside a transaction
    printed: deque[str] = deque()  # the schemas of the lines printed and not taken yet, in order
    emptied: deque[str] = deque()  # schemas tests were done with, emptied, to hand out again
    made: set[str] = set()  # every schema not dropped yet
    reference: list[tuple[str, ...]] = []  # the shape of the first schema built

    def drop(schema: str) -> None:
        made.discard(schema)
        try:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        except Exception:
            traceback.print_exc()

    def build() -> None:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        try:
            conn.execute(f"CREATE SCHEMA {schema}")
            made.add(schema)
            open_store(url_of(base, schema)).close()
            if not reference:
                reference.extend(shape(conn, schema))
        except Exception:
            drop(schema)
            printed.append("")
            print("!" + traceback.format_exc().replace("\n", "\\n"), flush=True)
            return
        printed.append(schema)
        print(schema, flush=True)

    def ready() -> None:
        while len(emptied) > LAG:  # the oldest, still empty and alike
            schema = emptied.popleft()
            end_connections(conn, schema)
            if is_empty(conn, schema) and shape(conn, schema) == reference:
                printed.append(schema)
                print(schema, flush=True)
                return
            drop(schema)
        build()

    def done(schema: str) -> None:
        try:
            end_connections(conn, schema)
            renamed = f"t_{uuid.uuid4().hex[:12]}"
            conn.execute(f"ALTER SCHEMA {schema} RENAME TO {renamed}")
            made.discard(schema)
            made.add(renamed)
            schema = renamed
            if shape(conn, schema) == reference:
                empty(conn, schema)
                if is_empty(conn, schema) and shape(conn, schema) == reference:
                    emptied.append(schema)
                    return
        except Exception:
            traceback.print_exc()
        drop(schema)

    for _ in range(ahead):
        build()
    for line in sys.stdin:
        command, _, schema = line.strip().partition(" ")
        if command == "take":  # the test run read the oldest line
            printed.popleft()
            ready()
        elif schema.startswith("t_") and schema[2:].isalnum():
            made.add(schema)
            if command == "done":
                done(schema)
            elif command == "drop":
                drop(schema)
    for schema in sorted(made):
        drop(schema)
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

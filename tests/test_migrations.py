"""Versioned schema migrations (``ceap.store.migrations``, Alembic): a store made by the
release before them opens and upgrades with its data intact, on SQLite and PostgreSQL;
the newest revision builds exactly the schema the schema modules describe; ``ceap migrate``."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from ceap.cli import app
from ceap.store import migrations, open_store
from ceap.store.admin_schema import admin_ddl
from ceap.store.delivery_schema import add_missing_columns, delivery_ddl
from ceap.store.digest_schema import digest_ddl
from ceap.store.experiment_schema import experiment_ddl
from ceap.store.journey_schema import journey_ddl
from ceap.store.migrations import head, newest_file, offline_sql, status
from ceap.store.outcome_schema import outcome_ddl
from ceap.store.schedule_schema import schedule_ddl
from ceap.store.schema import CANDIDATE_COLUMNS
from ceap.store.sql_common import ddl
from ceap.store.worker_schema import worker_ddl
from tests.conftest import PG_BASE, require_service

FIXTURES = Path(__file__).parent / "fixtures" / "previous_release"
#: table -> rows the previous release's fixture holds (tests/fixtures/previous_release/make.py)
EXPECTED = {"candidates": 3, "runs": 1, "api_keys": 1, "suppressions": 1, "bandit_arms": 1, "inbox": 1}


def _counts(store) -> dict[str, int]:
    conn = store._conn
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in EXPECTED}


def _schema_modules(dialect: str) -> list[str]:
    return [*ddl(dialect), *delivery_ddl(dialect), *experiment_ddl(dialect), *outcome_ddl(dialect),
            *schedule_ddl(dialect), *admin_ddl(dialect), *worker_ddl(dialect), *digest_ddl(dialect),
            *journey_ddl(dialect),
            *add_missing_columns(dialect, set(CANDIDATE_COLUMNS), "candidates"),
            *add_missing_columns(dialect, set(), "deliveries")[-1:],
            *add_missing_columns(dialect, set(), "api_keys")]


def _sqlite_shape(conn: sqlite3.Connection) -> dict[str, list[tuple[str, str, int]]]:
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'alembic_version'")]
    shape = {t: sorted((r[1], r[2], r[3]) for r in conn.execute(f"PRAGMA table_info({t})"))
             for t in tables}
    # an index's definition too (columns, partial WHERE), whitespace aside
    shape["indexes"] = sorted((r[0], r[1], " ".join((r[2] or "").split()))  # type: ignore[misc]
                              for r in conn.execute(
        "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' "
        "AND tbl_name != 'alembic_version'"))
    return shape


def test_previous_release_sqlite_store_upgrades_with_its_data(tmp_path: Path) -> None:
    db = tmp_path / "ceap.db"
    shutil.copy(FIXTURES / "store.db", db)
    before = status(open_store(f"sqlite:///{db}", migrate=False))
    assert before.current is None and before.pending[0] == "0001"
    store = open_store(f"sqlite:///{db}")
    assert status(store).current == head() and status(store).up_to_date
    assert _counts(store) == EXPECTED
    payload, arm = store._conn.execute(
        "SELECT payload, arm FROM candidates WHERE customer_id = 'c0'").fetchone()
    assert (json.loads(payload), arm) == ({"i": 0, "text": "héllo ✓"}, "treatment")
    store.close()
    # opening again applies nothing and keeps everything
    store = open_store(f"sqlite:///{db}")
    assert _counts(store) == EXPECTED
    store.close()


def test_newest_revision_builds_what_the_schema_modules_describe(tmp_path: Path) -> None:
    migrated = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    direct = sqlite3.connect(tmp_path / "b.db")
    for statement in _schema_modules("sqlite"):
        direct.execute(statement)
    assert _sqlite_shape(migrated._conn) == _sqlite_shape(direct)


def test_an_older_candidates_table_gains_the_columns_added_since(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "store.db", db)
    with sqlite3.connect(db) as conn:  # as a database from before the experiments
        conn.execute("UPDATE candidates SET holdout = 1 WHERE customer_id = 'c2'")
        for column in ("arm", "variant", "features"):
            conn.execute(f"ALTER TABLE candidates DROP COLUMN {column}")
    store = open_store(f"sqlite:///{db}")
    arms = dict(store._conn.execute("SELECT customer_id, arm FROM candidates").fetchall())
    assert arms == {"c0": "treatment", "c1": "treatment", "c2": "holdout"}


@pytest.fixture
def previous_pg() -> str:
    require_service("postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dump = (FIXTURES / "postgres.sql").read_text()
    sql = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(sql.replace("ceap_prev", schema))  # type: ignore[arg-type]
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.service("postgres")
def test_previous_release_postgres_store_upgrades_with_its_data(previous_pg: str) -> None:
    assert status(open_store(previous_pg, migrate=False)).current is None
    store = open_store(previous_pg)
    assert status(store).current == head()
    assert _counts(store) == EXPECTED
    row = store._conn.execute("SELECT payload->>'text', arm FROM candidates "
                              "WHERE customer_id = 'c0'").fetchone()
    assert row == ("héllo ✓", "treatment")
    store.close()


def test_revision_files_are_numbered_in_order() -> None:
    # stores skip Alembic when they stand at the newest file's revision
    assert newest_file() == head()


@pytest.mark.service("postgres")
def test_concurrent_first_opens_of_a_postgres_store_upgrade_it_once(previous_pg: str) -> None:
    opened: list[object] = []

    def open_one() -> None:
        opened.append(open_store(previous_pg))

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 3
    for store in opened:
        assert status(store).current == head() and _counts(store) == EXPECTED
        store.close()  # type: ignore[attr-defined]


def test_offline_sql_creates_every_table() -> None:
    out = io.StringIO()
    offline_sql("postgresql", out)
    text = out.getvalue()
    assert "CREATE TABLE IF NOT EXISTS candidates" in text and "alembic_version" in text
    assert text.count("CREATE TABLE IF NOT EXISTS") == sum(
        s.startswith("CREATE TABLE") for s in _schema_modules("postgres"))


def test_ceap_migrate_upgrades_and_reports(tmp_path: Path) -> None:
    db = tmp_path / "ceap.db"
    shutil.copy(FIXTURES / "store.db", db)
    runner = CliRunner()
    url = f"sqlite:///{db}"
    result = runner.invoke(app, ["--project", str(tmp_path), "--store", url, "migrate", "status"])
    assert result.exit_code == 1, result.output
    assert "behind" in result.output and "0001" in result.output
    result = runner.invoke(app, ["--project", str(tmp_path), "--store", url, "migrate"])
    assert result.exit_code == 0, result.output
    assert f"upgraded to {head()}" in result.output
    result = runner.invoke(app, ["--project", str(tmp_path), "--store", url, "migrate", "status"])
    assert result.exit_code == 0 and "up to date" in result.output
    result = runner.invoke(app, ["--project", str(tmp_path), "--store", url, "migrate", "--sql"])
    assert result.exit_code == 0 and "CREATE TABLE IF NOT EXISTS candidates" in result.output


def test_a_revision_from_the_template_adds_tables_and_only_missing_columns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = Path(migrations.__file__).parent
    versions = tmp_path / "versions"
    shutil.copytree(here / "versions", versions)
    revision = (here / "script.py.mako").read_text()
    for old, new in [("${message}", "a test table"), ("${up_revision}", "9999"),
                     ("${down_revision | comma,n}", head()), ("${repr(up_revision)}", "'9999'"),
                     ("${repr(down_revision)}", repr(head())),
                     ('    "sqlite": [\n', '    "sqlite": [\n        "CREATE TABLE IF NOT EXISTS extra_t '
                                          '(id INTEGER PRIMARY KEY)",\n'),
                     ("    # add_columns(", "    add_columns("),
                     ('    #' + ' ' * 24 + '"postgresql"', ' ' * 27 + '"postgresql"')]:
        assert old in revision, old
        revision = revision.replace(old, new)
    (versions / "9999_test.py").write_text(revision)
    config = migrations._config

    def with_versions() -> Any:
        found = config()
        found.set_main_option("version_locations", str(versions))
        return found

    monkeypatch.setattr(migrations, "_config", with_versions)
    monkeypatch.setattr(migrations, "newest_file", lambda: "9999")
    db = tmp_path / "ceap.db"
    shutil.copy(FIXTURES / "store.db", db)
    with sqlite3.connect(db) as conn:  # as if a release had added the column at open already
        conn.execute("ALTER TABLE timers ADD COLUMN partition_key TEXT")
    store = open_store(f"sqlite:///{db}")
    assert migrations.status(store).current == "9999"
    assert store._conn.execute("SELECT count(*) FROM extra_t").fetchone() == (0,)
    assert _counts(store) == EXPECTED

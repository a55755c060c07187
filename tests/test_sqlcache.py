"""SQL expressions that DuckDB parsed are remembered between runs (``ceap.sqlcache``), so
validating an unchanged program imports no DuckDB; errors are always parsed again."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from ceap import sqlcache
from ceap.sqlexpr import check_expression
from tests.cache_helpers import fresh_cache, probe_lines


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from fresh_cache(tmp_path, monkeypatch, sqlcache.parsed_expressions.cache_clear)


def _check_in_fresh_interpreter(expr: str, folder: Path) -> tuple[str, bool]:
    """(error or "ok", whether DuckDB was imported) of ``check_expression(expr)``."""
    probe = ("import sys\nfrom ceap.sqlexpr import check_expression\n"
             "try:\n    check_expression(sys.argv[1]); print('ok')\n"
             "except ValueError as exc:\n    print(exc)\n"
             "print('duckdb' in sys.modules or '_duckdb' in sys.modules)")
    result, imported = probe_lines(probe, [expr], folder)[:2]
    return result, imported == "True"


def test_a_parsed_expression_is_not_parsed_again(cache: Path) -> None:
    # "::" is outside what the quick check (ceap.sqlsyntax) knows: DuckDB parses it
    expr = "amount::DOUBLE > 50 AND country = 'US'"
    assert _check_in_fresh_interpreter(expr, cache) == ("ok", True)
    files = list(cache.iterdir())
    assert [f.name for f in files] == [f"sql-parsed-v{sqlcache.FORMAT}-duckdb-{version('duckdb')}.txt"]
    assert _check_in_fresh_interpreter(expr, cache) == ("ok", False)
    # another expression is parsed by DuckDB, even one differing only in spacing
    assert _check_in_fresh_interpreter(expr.replace("AND", "AND "), cache) == ("ok", True)


def test_a_simple_expression_needs_no_duckdb_nor_cache(cache: Path) -> None:
    assert _check_in_fresh_interpreter("amount > 50 AND country = 'US'", cache) == ("ok", False)
    assert not cache.exists()


def test_an_invalid_expression_is_never_remembered(cache: Path) -> None:
    for _ in range(2):
        result, imported = _check_in_fresh_interpreter("amount >", cache)
        assert result.startswith("invalid SQL expression"), result
        assert imported
    assert not cache.exists() or all(f.read_text() == "" for f in cache.iterdir())
    with pytest.raises(ValueError, match="several statements"):
        check_expression("1); SELECT (2")
    with pytest.raises(ValueError, match="several statements"):
        check_expression("1); SELECT (2")


def test_an_empty_cache_dir_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEAP_CACHE_DIR", "")
    monkeypatch.chdir(tmp_path)
    sqlcache.parsed_expressions.cache_clear()
    try:
        assert sqlcache.cache_dir() is None
        assert check_expression("a + 1") == "a + 1"
        assert list(tmp_path.iterdir()) == []
    finally:
        sqlcache.parsed_expressions.cache_clear()


def test_the_default_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CEAP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert sqlcache.cache_dir() == tmp_path / "ceap"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sqlcache.cache_dir() == tmp_path / "home" / ".cache" / "ceap"


def test_an_unwritable_folder_still_checks(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    parsed = sqlcache.ParsedExpressions(blocker / "sql.txt")
    parsed.add("a + 1")
    assert "a + 1" in parsed  # remembered in memory for this process
    assert parsed.path is None


def test_a_full_file_starts_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlcache, "MAX_ENTRIES", 3)
    path = tmp_path / "sql.txt"
    parsed = sqlcache.ParsedExpressions(path)
    for i in range(4):
        parsed.add(f"a + {i}")
    assert len(path.read_text().split()) == 1
    assert "a + 3" in sqlcache.ParsedExpressions(path)
    assert "a + 0" not in sqlcache.ParsedExpressions(path)


def test_the_parser_is_the_duckdb_package_s_own() -> None:
    # check_expression imports DuckDB's compiled module alone (its Python layer costs as much
    # again): it must be what the duckdb package itself calls
    import duckdb

    from ceap.sqlexpr import _parser

    engine = _parser()
    assert engine.extract_statements is duckdb.extract_statements
    assert engine.Error is duckdb.Error

"""A template field that passed the check is remembered (``CEAP_CACHE_DIR``): checking it
again, for the same program data, needs no Jinja2; a field with problems is never kept."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from ceap.delivery.templates import checks
from ceap.delivery.templates.checks import Known, check_source
from tests.cache_helpers import fresh_cache, probe_lines


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from fresh_cache(tmp_path, monkeypatch, checks.passed_sources.cache_clear)


def _check_in_fresh_interpreter(source: str, payload: list[str], folder: Path | str
                                ) -> tuple[list[str], bool]:
    """(problems, whether Jinja2 was imported) of ``check_source`` in a new interpreter."""
    probe = ("import sys\nfrom ceap.delivery.templates.checks import Known, check_source\n"
             "print(check_source(sys.argv[1], Known(frozenset(sys.argv[2:]))))\n"
             "print('jinja2' in sys.modules)")
    problems, imported = probe_lines(probe, [source, *payload], folder)[:2]
    return ast.literal_eval(problems), imported == "True"


def test_a_field_that_passed_needs_no_jinja2_the_next_time(cache: Path) -> None:
    source = "Hello {{ profile.email }}: {{ payload.code }}"
    assert _check_in_fresh_interpreter(source, ["code"], cache) == ([], True)
    assert [f.name.split("-jinja2-")[0] for f in cache.iterdir()] == ["templates-passed"]
    assert _check_in_fresh_interpreter(source, ["code"], cache) == ([], False)
    # the same field for a program whose payload lacks the key: checked, and it fails
    assert _check_in_fresh_interpreter(source, ["other"], cache) == (
        ["payload has no key 'code' (the program's payload has: other)"], True)
    # another field, even one differing in spacing only, is checked
    assert _check_in_fresh_interpreter(source + " ", ["code"], cache) == ([], True)


def test_a_field_with_problems_is_never_remembered(cache: Path) -> None:
    for _ in range(2):
        problems, imported = _check_in_fresh_interpreter("{{ payload.code ", ["code"], cache)
        assert problems[0].startswith("line 1: unexpected end") and imported
        assert _check_in_fresh_interpreter("{{ custmer }}", [], cache)[0][0].startswith(
            "unknown variable 'custmer'")
    assert not cache.exists() or all(f.read_text() == "" for f in cache.iterdir())


def test_an_empty_cache_dir_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert _check_in_fresh_interpreter("{{ payload.code }}", ["code"], "") == ([], True)
    assert list(tmp_path.iterdir()) == []


def test_the_file_depends_on_the_checking_code(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    assert check_source("{{ payload.code }}", Known(frozenset({"code"}))) == []
    first = checks.passed_sources().path
    assert first is not None and first.exists()
    # the same checks from a copy of the modules that differs: another file, checked again
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in checks._CHECK_MODULES:
        (copy / name).write_bytes(Path(checks.__file__).with_name(name).read_bytes())
    (copy / "context.py").write_text((copy / "context.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(checks, "__file__", str(copy / "checks.py"))
    checks.passed_sources.cache_clear()
    second = checks.passed_sources().path
    assert second is not None and second != first and second.parent == first.parent
    assert "{{ payload.code }}" not in checks.passed_sources()

"""The suite's own rule: no test module reads the clock when it is imported.

A time taken at import is stale by the time its test runs (collection and the
tests before it can take minutes), and a day boundary can fall in between. Tests
take times from an injected clock (``ceap.testing.FakeClock``) or from ``now()``
at the moment of use. ``make test-clock`` checks the rest: the suite under a
clock moved a year ahead and across midnight.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: calls that read the real clock (and ``FakeClock()``, which starts at the real "now")
CLOCK_READS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter", "gmtime",
               "localtime"}


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _import_time_nodes(tree: ast.Module) -> list[ast.AST]:
    """What runs at import: module and class bodies, decorators and default values, but not
    function bodies or lambdas."""
    found: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            todo += [*node.decorator_list, *node.args.defaults,
                     *[d for d in node.args.kw_defaults if d is not None]]
            continue
        if isinstance(node, ast.Lambda):
            continue
        found.append(node)
        todo += list(ast.iter_child_nodes(node))
    return found


def clock_reads_at_import(source: str) -> list[str]:
    """``line: name()`` for every clock read that runs when ``source`` is imported."""
    calls = [node for node in _import_time_nodes(ast.parse(source)) if isinstance(node, ast.Call)]
    return [f"{call.lineno}: {_called_name(call)}()" for call in sorted(calls, key=lambda c: c.lineno)
            if _called_name(call) in CLOCK_READS
            or (_called_name(call) == "FakeClock" and not (call.args or call.keywords))]


def test_the_check_sees_import_time_reads_and_spares_deferred_ones() -> None:
    source = """
import time
from datetime import UTC, datetime, timedelta
T0 = datetime(2026, 11, 25, tzinfo=UTC)                      # a fixed date: fine
LATER = datetime.now(UTC) + timedelta(seconds=60)            # read at import
CASES = [dict(at=time.time())]                               # read at import, in a table
def helper(at=datetime.now(UTC)):                            # a default value: at import
    return datetime.now(UTC)                                 # at call: fine
deferred = lambda: datetime.now(UTC)                         # at call: fine
class Box:
    stamp = time.monotonic()                                 # a class body: at import
SHARED, FIXED = FakeClock(), FakeClock(T0)                   # the first starts at the real now
"""
    assert clock_reads_at_import(source) == ["5: now()", "6: time()", "7: now()", "11: monotonic()",
                                             "12: FakeClock()"]


def test_no_test_module_reads_the_clock_at_import() -> None:
    offenders = {path.relative_to(TESTS.parent).as_posix(): reads
                 for path in sorted(TESTS.rglob("*.py"))
                 if (reads := clock_reads_at_import(path.read_text(encoding="utf-8")))}
    assert offenders == {}, "read the clock when the test runs, not at import"

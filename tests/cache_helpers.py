"""Shared by the tests of what ``CEAP_CACHE_DIR`` remembers between runs: a fresh cache
folder per test, and a probe run in a new interpreter that sees only that folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                clear: Callable[[], None]) -> Iterator[Path]:
    """A cache folder of its own for one test, with ``clear`` (the in-process memory of
    what it holds) emptied before and after."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CEAP_CACHE_DIR", str(folder))
    clear()
    yield folder
    clear()


def probe_lines(probe: str, args: list[str], folder: Path | str) -> list[str]:
    """The printed lines of ``python -c probe *args`` run with ``folder`` as the cache."""
    proc = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "CEAP_CACHE_DIR": str(folder)})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\n")

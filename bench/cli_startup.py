"""Start-up of the ``ceap`` command: wall time, CPU time and peak RSS of ``ceap --help`` and
of ``ceap validate`` of one program file (the win-back example, with SQL, a scorer and a
template; and a CSV-only program), several runs each, median. ``validate`` runs with a
cache folder of its own (``CEAP_CACHE_DIR``): what DuckDB parsed in the warm-up run is
remembered for the timed runs (``ceap.sqlcache``), and so is the template's check (since
``ceap.delivery.templates.checks.passed_sources``: no Jinja2); the "nothing kept" case sets
``CEAP_CACHE_DIR`` empty, so nothing is remembered, as on a program's first validation
(win_back's SQL is inside what ``ceap.sqlsyntax`` recognises without DuckDB, so since
that check both cases start no DuckDB; on code before it, "nothing kept" starts DuckDB).
``ceap --help`` is printed without Typer since ``ceap.cli.listing``.

    .venv/bin/python bench/cli_startup.py                      # this checkout
    .venv/bin/python bench/cli_startup.py --baseline SRC_DIR   # and another source tree beside it

``--baseline`` runs the same commands with ``PYTHONPATH=SRC_DIR`` (for example a
``git archive main src | tar -x -C /tmp/main`` export, giving ``/tmp/main/src``), each
run alternating with this checkout's, and prints the ratios. ``python -c pass`` is the
interpreter's own floor. Goal (issue 16): both commands under 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIN_BACK = ["-m", "ceap", "validate", "programs/win_back.yaml"]
#: label -> (arguments of python, environment; CACHE stands for the run's cache folder)
CACHE = "<cache>"
CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "python -c pass": (["-c", "pass"], {}),
    "ceap --help": (["-m", "ceap", "--help"], {}),
    "ceap validate programs/win_back.yaml": (WIN_BACK, {"CEAP_CACHE_DIR": CACHE}),
    "ceap validate win_back.yaml, nothing kept": (WIN_BACK, {"CEAP_CACHE_DIR": ""}),
    "ceap validate bench/programs/csv_only.yaml": (
        ["-m", "ceap", "validate", "bench/programs/csv_only.yaml"], {"CEAP_CACHE_DIR": CACHE}),
}


def child_usage(args: list[str], src: Path, extra: dict[str, str] | None = None
                ) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS (MB) of one run of ``python ARGS`` (from
    wait4); exits if the run fails. CPU time is what other jobs on the machine distort least.
    Bytecode is written and reused (``PYTHONDONTWRITEBYTECODE`` is dropped), as an installed
    package's is: otherwise every run compiles ceap's sources again."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(src), COLUMNS="100", **(extra or {}))
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"python {' '.join(args)} (PYTHONPATH={src}) failed")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="another source tree (its src/ folder)")
    args = parser.parse_args()
    trees = {"this": ROOT / "src"}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    print(f"load: {Path('/proc/loadavg').read_text().split()[:3]}  runs: {args.runs} (median)")
    print(f"{'command':44} {'tree':9} {'wall s':>8} {'CPU s':>8} {'RSS MB':>8}")
    medians: dict[tuple[str, str], tuple[float, float]] = {}
    cache = tempfile.mkdtemp(prefix="ceap-bench-cache-")
    for label, (cmd, case_env) in CASES.items():
        extra = {k: cache if v == CACHE else v for k, v in case_env.items()}
        walls: dict[str, list[float]] = {t: [] for t in trees}
        cpus: dict[str, list[float]] = {t: [] for t in trees}
        rss: dict[str, list[float]] = {t: [] for t in trees}
        for src in trees.values():  # warm the file cache, the bytecode and the SQL cache
            child_usage(cmd, src, extra)
        for _ in range(args.runs):
            for tree, src in trees.items():  # alternate, so load drifts hit both alike
                start = time.perf_counter()
                cpu, peak = child_usage(cmd, src, extra)
                walls[tree].append(time.perf_counter() - start)
                cpus[tree].append(cpu)
                rss[tree].append(peak)
        for tree in trees:
            wall, cpu = statistics.median(walls[tree]), statistics.median(cpus[tree])
            medians[(label, tree)] = (wall, cpu)
            print(f"{label:44} {tree:9} {wall:8.3f} {cpu:8.3f} {statistics.median(rss[tree]):8.1f}")
    shutil.rmtree(cache, ignore_errors=True)
    if args.baseline:
        for label in CASES:
            (wall, cpu), (wall0, cpu0) = medians[(label, "this")], medians[(label, "baseline")]
            print(f"ratio this / baseline, {label}: wall {wall / wall0:.2f}, CPU {cpu / cpu0:.2f}")


if __name__ == "__main__":
    main()

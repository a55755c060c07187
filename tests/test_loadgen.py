"""bench/loadgen.py: the open-loop schedule, nearest-rank percentiles, and latency counted
from the intended send time (a stalled server shows up in every request due during it)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "bench" / "loadgen.py"
    spec = importlib.util.spec_from_file_location("ceap_bench_loadgen", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lg = _load()


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    found = lg.percentiles(values, (50, 90, 99, 99.9, 100))
    assert found == {50: 50.0, 90: 90.0, 99: 99.0, 99.9: 100.0, 100: 100.0}
    assert lg.percentiles([3.0, 1.0, 2.0], (50,)) == {50: 2.0}  # order does not matter
    assert lg.percentiles([5.0], (1, 99)) == {1: 5.0, 99: 5.0}
    # 1,000 values: p99 is the 990th smallest, never interpolated between two
    thousand = [float(v) for v in range(1000, 0, -1)]
    assert lg.percentiles(thousand, (99, 99.9)) == {99: 990.0, 99.9: 999.0}
    assert lg.percentiles([1.0, 2.0], (50,)) == {50: 1.0}


def test_nearest_rank_in_exact_arithmetic() -> None:
    assert lg.rank(99.9, 1000) == 999  # not 1000, as ceil(99.9 / 100 * 1000) is in floats
    assert lg.rank(99, 100) == 99 and lg.rank(99, 101) == 100 and lg.rank(50, 1) == 1
    assert lg.rank(0.001, 10) == 1 and lg.rank(100, 7) == 7
    with pytest.raises(ValueError, match="0 < q <= 100"):
        lg.rank(0, 10)


def test_unanswered_requests_count_as_slowest() -> None:
    values = [0.001] * 98 + [math.inf] * 2
    found = lg.percentiles(values, (50, 98, 99))
    assert found[50] == 0.001 and found[98] == 0.001 and math.isinf(found[99])
    assert math.isnan(lg.percentiles([], (99,))[99])


def test_schedule_is_a_constant_rate_with_targets_in_turns() -> None:
    plan = lg.schedule(rate=100, duration=2, targets=3, slice_s=0.5)
    assert len(plan) == 200
    offsets = [t for t, _ in plan]
    assert offsets[:3] == [0.0, 0.01, 0.02] and offsets[-1] == pytest.approx(1.99)
    turns = [k for _, k in plan]
    assert turns[:50] == [0] * 50 and turns[50:100] == [1] * 50 and turns[100:150] == [2] * 50
    assert turns[150:] == [0] * 50
    with pytest.raises(ValueError, match="positive"):
        lg.schedule(rate=0, duration=1, targets=1, slice_s=1)


def test_parse_head() -> None:
    assert lg.parse_head(b"HTTP/1.1 200 OK\r\ncontent-type: x\r\nContent-Length: 12") == (200, 12)
    assert lg.parse_head(b"HTTP/1.1 404 Not Found\r\ncontent-length:0") == (404, 0)
    with pytest.raises(ValueError, match="Content-Length"):
        lg.parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked")


def test_summary_in_milliseconds() -> None:
    result = lg.Result(latencies=[0.001 * v for v in range(1, 101)], send_lag=[0.0] * 100,
                       statuses={200: 99, 503: 1})
    found = lg.summary(result)
    assert found["p50"] == pytest.approx(50.0) and found["p99"] == pytest.approx(99.0)
    assert found["requests"] == 100 and found["not_200"] == 1 and found["unanswered"] == 0


async def _stalling_server(stall: float) -> tuple[asyncio.AbstractServer, int, list[float]]:
    """HTTP/1.1 keep-alive server; its first answer waits ``stall`` seconds."""
    answered: list[float] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if not answered:
                await asyncio.sleep(stall)
            answered.append(1.0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], answered


def test_a_stall_counts_for_every_request_due_during_it() -> None:
    """One connection, 100 requests/s, the first answer held 0.5 s: a closed loop would
    report one slow request; from the intended times, every request due in the first
    0.4 s waited at least 0.1 s."""

    async def scenario() -> dict[str, object]:
        server, port, _ = await _stalling_server(0.5)
        async with server:
            target = lg.Target("t", lambda i: "/x")
            return await lg.run("127.0.0.1", port, [target], rate=100, duration=1.0,
                                max_connections=1, drain_s=10)

    result = asyncio.run(scenario())["t"]
    assert len(result.latencies) == 100 and result.statuses == {200: 100}
    assert sum(1 for v in result.latencies if v >= 0.1) >= 40
    assert all(v >= 0 for v in result.latencies)


def test_unanswered_requests_are_reported() -> None:
    async def scenario() -> dict[str, object]:
        server, port, _ = await _stalling_server(30)
        async with server:
            target = lg.Target("t", lambda i: "/x")
            out = await lg.run("127.0.0.1", port, [target], rate=20, duration=0.5,
                               max_connections=1, drain_s=0.5)
            for writer_task in asyncio.all_tasks() - {asyncio.current_task()}:
                writer_task.cancel()
            return out

    result = asyncio.run(scenario())["t"]
    assert len(result.latencies) == 10
    assert lg.summary(result)["unanswered"] == 10
    assert math.isinf(lg.percentiles(result.latencies, (50,))[50])

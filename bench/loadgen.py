"""An open-loop HTTP load generator: a constant offered rate, latency from the intended send time.

Request ``i`` is due at ``start + i / rate`` whatever happened to the requests before
it (an open loop, unlike wrk's closed loop, where a slow answer delays the next
request and hides the wait: coordinated omission). Each latency is measured from
the request's *intended* send time to the last byte of its answer, so time spent
waiting for a free connection or behind a late generator counts. A request not
answered before the run's deadline counts as infinitely slow.

The targets are interleaved in slices (``slice_s`` seconds of one, then the next,
round and round), each offered at the full ``rate``, so every target sees the same
machine over the run and their percentiles compare side by side.

HTTP/1.1 with keep-alive over up to ``max_connections`` connections to one host (only
``Content-Length`` answers, as uvicorn sends). Loopback only: this is for benchmarks
of a server on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

#: percentiles every report has
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True)
class Target:
    """One kind of request: ``paths(i)`` gives the path of its ``i``-th request."""

    name: str
    paths: Callable[[int], str]
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Result:
    """What one target saw: latencies (seconds, ``inf`` for unanswered), how late the
    generator sent (seconds past the intended time), and answers by status."""

    latencies: list[float] = field(default_factory=list)
    #: each latency's request: its intended send time, seconds from the run's start
    offsets: list[float] = field(default_factory=list)
    send_lag: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def schedule(rate: float, duration: float, targets: int, slice_s: float) -> list[tuple[float, int]]:
    """``(intended offset in seconds, target index)`` of every request: one every
    ``1/rate`` seconds, the targets taking turns slice by slice."""
    if rate <= 0 or duration <= 0 or targets < 1 or slice_s <= 0:
        raise ValueError("rate, duration and slice_s must be positive, targets at least 1")
    n = round(rate * duration)
    return [(i / rate, int((i / rate) // slice_s) % targets) for i in range(n)]


def percentiles(latencies: Sequence[float], qs: Sequence[float] = PERCENTILES) -> dict[float, float]:
    """Nearest-rank percentiles (the smallest value with at least q% of the values at or
    below it), as HdrHistogram reports them; ``inf`` values (unanswered) count as slowest."""
    if not latencies:
        return {q: math.nan for q in qs}
    values = np.sort(np.asarray(latencies, dtype=float))
    return {q: float(values[rank(q, len(values)) - 1]) for q in qs}


def rank(q: float, n: int) -> int:
    """The nearest rank (1-based) of percentile ``q`` among ``n`` values: ceil(q/100 * n),
    in exact arithmetic (in floats, 99.9% of 1,000 is 999.0000000000001, one rank too far)."""
    if not 0 < q <= 100 or n < 1:
        raise ValueError(f"percentile {q} of {n} values: need 0 < q <= 100 and n >= 1")
    return max(1, math.ceil(Fraction(str(q)) * n / 100))


def parse_head(head: bytes) -> tuple[int, int]:
    """Status code and Content-Length of a response head (without the blank line)."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return status, int(value.strip())
    raise ValueError(f"response without Content-Length: {lines[0]!r}")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, done: Callable[[_Connection, int], None]):
        self.done, self.buffer, self.transport = done, bytearray(), None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        status, length = parse_head(bytes(self.buffer[:end]))
        if len(self.buffer) >= end + 4 + length:
            del self.buffer[:end + 4 + length]
            self.done(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, request: bytes) -> None:
        self.transport.write(request)  # type: ignore[attr-defined]


async def run(host: str, port: int, targets: Sequence[Target], *, rate: float, duration: float,
              slice_s: float = 1.0, max_connections: int = 256, drain_s: float = 10.0,
              clock: Callable[[], float] = time.perf_counter) -> dict[str, Result]:
    """Offer ``rate`` requests a second for ``duration`` seconds; results by target name."""
    plan = schedule(rate, duration, len(targets), slice_s)
    heads = [b"".join(f"{k}: {v}\r\n".encode() for k, v in t.headers) for t in targets]
    requests = [f"GET {targets[k].paths(i)} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
                + heads[k] + b"\r\n" for i, (_, k) in enumerate(plan)]  # made before the clock starts
    results = {t.name: Result() for t in targets}
    loop = asyncio.get_running_loop()
    idle: deque[_Connection] = deque()
    waiting: deque[int] = deque()  # requests due with no free connection, oldest first
    in_flight: dict[_Connection, int] = {}
    opening = 0
    start = clock() + 0.2
    finished = loop.create_future()
    answered = 0

    def send(conn: _Connection, i: int) -> None:
        offset, k = plan[i]
        results[targets[k].name].send_lag.append(clock() - (start + offset))
        in_flight[conn] = i
        conn.send(requests[i])

    def done(conn: _Connection, status: int) -> None:
        nonlocal answered
        now = clock()
        i = in_flight.pop(conn)
        offset, k = plan[i]
        result = results[targets[k].name]
        result.latencies.append(now - (start + offset))
        result.offsets.append(offset)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        answered += 1
        if waiting:
            send(conn, waiting.popleft())
        else:
            idle.append(conn)
        if answered == len(plan) and not finished.done():
            finished.set_result(None)

    async def open_one() -> None:
        nonlocal opening
        opening += 1
        try:
            _, conn = await loop.create_connection(lambda: _Connection(done), host, port)
        finally:
            opening -= 1
        if waiting:
            send(conn, waiting.popleft())
        else:
            idle.append(conn)

    for _ in range(min(32, max_connections)):
        await open_one()
    openers: set[asyncio.Task[None]] = set()
    i = 0
    while i < len(plan):
        now = clock()
        while i < len(plan) and start + plan[i][0] <= now:
            if idle:
                send(idle.popleft(), i)
            else:
                waiting.append(i)
                if len(idle) + len(in_flight) + opening < max_connections:
                    task = loop.create_task(open_one())
                    openers.add(task)
                    task.add_done_callback(openers.discard)
            i += 1
        if i < len(plan):
            await asyncio.sleep(max(0.0, start + plan[i][0] - clock()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, drain_s)
    for j in [*in_flight.values(), *waiting]:  # never answered: infinitely slow
        results[targets[plan[j][1]].name].latencies.append(math.inf)
        results[targets[plan[j][1]].name].offsets.append(plan[j][0])
    for conn in [*idle, *in_flight]:
        conn.transport.close()  # type: ignore[union-attr]
    return results


def summary(result: Result) -> dict[str, float]:
    """Milliseconds: the percentiles of latency, the generator's p99 lateness, counts."""
    found = {f"p{q:g}": v * 1000 for q, v in percentiles(result.latencies).items()}
    found["max"] = max(result.latencies, default=math.nan) * 1000
    found["send_lag_p99"] = percentiles(result.send_lag, (99.0,))[99.0] * 1000
    found["requests"] = float(len(result.latencies))
    found["unanswered"] = float(sum(1 for v in result.latencies if math.isinf(v)))
    found["not_200"] = float(sum(n for s, n in result.statuses.items() if s != 200))
    return found

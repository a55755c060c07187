"""Every Prometheus metric CEAP exports, in one place (docs/operations.md lists them).

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` durations,
``_timestamp_seconds`` Unix times). Labels hold no personal data and have bounded
values: program, channel and stream names from the project's own files, route
templates (``/v1/customers/{customer_id}/inbox``, never the path itself),
statuses and outcomes from fixed lists.

Instrumented code calls the ``record_*``/``observe_*`` helpers below once per
batch, run or request, never per row. The metrics live in prometheus_client's
default registry; with ``PROMETHEUS_MULTIPROC_DIR`` set (before the process
starts), their values go to files there, so several processes (``ceap serve
--workers N``) are read as one (``ceap.observability.exposition``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

#: durations of HTTP requests, seconds
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: durations of batch runs, seconds (one second to four hours)
_RUN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
#: provider calls and micro-batches, seconds
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- HTTP API (ceap serve) -----------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "ceap_http_requests_total", "HTTP requests answered by ceap serve.",
    ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "ceap_http_request_duration_seconds", "Time to answer an HTTP request, by route template.",
    ["method", "route"], buckets=_HTTP_BUCKETS)

# -- batch runs (ceap run, ceap scheduler) ---------------------------------------------------
RUNS = Counter("ceap_runs_total", "Batch runs by program and outcome (succeeded, failed, skipped).",
               ["program", "status"])
RUN_DURATION = Histogram("ceap_run_duration_seconds", "Wall time of a batch run, by program.",
                         ["program"], buckets=_RUN_BUCKETS)
RUN_ROWS = Counter(
    "ceap_run_rows_total",
    "Rows at each funnel stage of succeeded batch runs (read, quarantined, filtered, eligible, "
    "selected, held_out, targeted, written, already_present).", ["program", "stage"])
RUN_LAST_SUCCESS = Gauge(
    "ceap_run_last_success_timestamp_seconds",
    "When the last succeeded batch run of a program started (its run time), Unix seconds.",
    ["program"], multiprocess_mode="max")
#: the funnel fields exported as ``stage``, in pipeline order
FUNNEL_STAGES = ("read", "quarantined", "filtered", "eligible", "selected", "held_out", "targeted",
                 "written", "already_present")

# -- real-time worker (ceap worker) ----------------------------------------------------------
WORKER_MESSAGES = Counter("ceap_worker_messages_total",
                          "Messages consumed from the stream and committed.", ["stream"])
WORKER_EVENTS = Counter("ceap_worker_events_total",
                        "Valid events processed by the real-time programs.", ["stream"])
WORKER_DEAD_LETTERS = Counter(
    "ceap_worker_dead_letters_total",
    "Messages that were not valid events (quarantined as program __events).", ["stream"])
WORKER_DROPPED = Counter("ceap_worker_events_dropped_total",
                         "Events not processed again: duplicate (seen before) or late (beyond "
                         "the allowed lateness).", ["stream", "reason"])
WORKER_CANDIDATES = Counter("ceap_worker_candidates_total",
                            "New candidates written by the real-time programs.", ["stream"])
WORKER_LAG = Gauge("ceap_worker_lag_messages",
                   "Messages waiting in the stream for this consumer group (when the broker tells).",
                   ["stream"], multiprocess_mode="max")
WORKER_BATCH = Histogram("ceap_worker_batch_duration_seconds",
                         "Time to process and store one micro-batch that held messages.",
                         ["stream"], buckets=_CALL_BUCKETS)

# -- dispatcher (ceap dispatch, ceap scheduler) ----------------------------------------------
DISPATCH_CANDIDATES = Counter(
    "ceap_dispatch_candidates_total",
    "Candidates handled by the dispatcher's planning: claimed, planned, suppressed, deferred, "
    "expired.", ["outcome"])
DELIVERIES = Counter(
    "ceap_deliveries_total",
    "Delivery attempts' outcomes by channel: sent, retry, dead, fallback, shadow, and after a "
    "crash requeued or ambiguous.", ["channel", "outcome"])
PROVIDER_DURATION = Histogram(
    "ceap_provider_call_duration_seconds",
    "Time of one call to a channel's provider (a message, or a plain channel's send call).",
    ["channel"], buckets=_CALL_BUCKETS)
BREAKER_STATE = Gauge("ceap_breaker_state",
                      "A channel's circuit breaker: 0 closed, 1 half-open, 2 open.", ["channel"],
                      multiprocess_mode="max")
STORE_DELIVERIES = Gauge(
    "ceap_store_deliveries",
    "Deliveries in the store now, every tenant: queued, sending, ambiguous (held after a crash), "
    "dead, possible_duplicate (resent after a crash). Read by the dispatcher.",
    ["status"], multiprocess_mode="mostrecent")
BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}

# -- scheduler (ceap scheduler) ---------------------------------------------------------------
SCHEDULE_WINDOWS = Counter(
    "ceap_schedule_windows_total",
    "Schedule windows by what the scheduler did: succeeded, failed, skipped (runs), missed, "
    "overrun, paused, busy.", ["program", "status"])
SCHEDULE_LAST_SUCCESS = Gauge(
    "ceap_schedule_last_success_timestamp_seconds",
    "The window of a program's last succeeded scheduled run, Unix seconds.", ["program"],
    multiprocess_mode="max")
SCHEDULE_NEXT = Gauge(
    "ceap_schedule_next_run_timestamp_seconds",
    "The next window the scheduler has not handled yet, Unix seconds: in the past means late.",
    ["program"], multiprocess_mode="min")
SCHEDULER_LEADER = Gauge("ceap_scheduler_leader",
                         "1 while this scheduler holds the lease of its tenant (runs programs), else 0.",
                         ["tenant"], multiprocess_mode="max")
SCHEDULER_LAST_TICK = Gauge("ceap_scheduler_last_tick_timestamp_seconds",
                            "When this scheduler last ticked, Unix seconds.", ["tenant"],
                            multiprocess_mode="max")


# -- helpers: one call per run, batch or pass ------------------------------------------------
def record_run(program: str, status: str, seconds: float, funnel: Mapping[str, Any] | None,
               started: float | None = None) -> None:
    """A finished batch run: its outcome, duration, funnel counts and, when it succeeded,
    its start time (``started``, Unix seconds)."""
    RUNS.labels(program, status).inc()
    if status == "skipped":
        return
    RUN_DURATION.labels(program).observe(seconds)
    if funnel and status == "succeeded":  # a failed run wrote nothing: its counts are no funnel
        filtered = sum((funnel.get("filters") or {}).values())
        for stage in FUNNEL_STAGES:
            n = filtered if stage == "filtered" else funnel.get(stage) or 0
            if n:
                RUN_ROWS.labels(program, stage).inc(n)
    if status == "succeeded" and started is not None:
        RUN_LAST_SUCCESS.labels(program).set(started)


def record_worker_batch(stream: str, messages: int, events: int, rejected: int, duplicates: int,
                        late: int, candidates: int, seconds: float | None) -> None:
    """One micro-batch of ``ceap worker``."""
    if messages:
        WORKER_MESSAGES.labels(stream).inc(messages)
    if events:
        WORKER_EVENTS.labels(stream).inc(events)
    if rejected:
        WORKER_DEAD_LETTERS.labels(stream).inc(rejected)
    if duplicates:
        WORKER_DROPPED.labels(stream, "duplicate").inc(duplicates)
    if late:
        WORKER_DROPPED.labels(stream, "late").inc(late)
    if candidates:
        WORKER_CANDIDATES.labels(stream).inc(candidates)
    if seconds is not None:
        WORKER_BATCH.labels(stream).observe(seconds)


def record_deliveries(channel: str, counts: Mapping[str, int]) -> None:
    """Outcomes recorded for one channel's deliveries (``{"sent": 3, "dead": 1, ...}``)."""
    for outcome, n in counts.items():
        if n:
            DELIVERIES.labels(channel, outcome).inc(n)


def record_dispatch_plan(counts: Mapping[str, int]) -> None:
    for outcome in ("claimed", "planned", "suppressed", "deferred", "expired"):
        n = counts.get(outcome, 0)
        if n:
            DISPATCH_CANDIDATES.labels(outcome).inc(n)


def set_breakers(states: Iterable[tuple[str, str]]) -> None:
    for channel, state in states:
        BREAKER_STATE.labels(channel).set(BREAKER_VALUES.get(state, 2))


def set_store_deliveries(counts: Mapping[str, int]) -> None:
    for status, n in counts.items():
        STORE_DELIVERIES.labels(status).set(n)


def exported_names() -> set[str]:
    """Every sample name the metrics above can export (``_bucket``, ``_count``, ... included)."""
    names: set[str] = set()
    for metric in (v for v in globals().values() if isinstance(v, Counter | Gauge | Histogram)):
        for family in metric.describe():
            base = family.name
            if family.type == "counter":
                names.update({f"{base}_total", f"{base}_created"})
            elif family.type == "histogram":
                names.update({f"{base}_bucket", f"{base}_count", f"{base}_sum", f"{base}_created"})
            else:
                names.add(base)
    return names

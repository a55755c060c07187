"""Testing support for plugin authors and program writers: the conformance
suite every plugin must pass, test doubles (an in-memory source, a capturing
channel, a clock) with builders of valid candidates and messages, and a local
HTTP provider stand-in for channel tests (``ceap.testing.provider``)."""

from ceap.testing.conformance import (
    check_channel,
    check_config,
    check_connector,
    check_filter,
    check_registration,
    check_scorer,
    check_store,
)
from ceap.testing.doubles import (
    CaptureConfig,
    CapturingChannel,
    FakeClock,
    MemoryConfig,
    MemoryConnector,
    Outbox,
    make_candidates,
    make_messages,
)
from ceap.testing.provider import Case, ProviderServer, Recorded, Reply, http_date_in, run_case

__all__ = [
    "CaptureConfig",
    "CapturingChannel",
    "Case",
    "FakeClock",
    "MemoryConfig",
    "MemoryConnector",
    "Outbox",
    "ProviderServer",
    "Recorded",
    "Reply",
    "check_channel",
    "check_config",
    "check_connector",
    "check_filter",
    "check_registration",
    "check_scorer",
    "check_store",
    "http_date_in",
    "make_candidates",
    "make_messages",
    "run_case",
]

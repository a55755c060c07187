"""Testing support for plugin authors and program writers: the conformance
suite every plugin must pass, and test doubles (an in-memory source, a
capturing channel) with builders of valid candidates and messages."""

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

__all__ = [
    "CaptureConfig",
    "CapturingChannel",
    "FakeClock",
    "MemoryConfig",
    "MemoryConnector",
    "Outbox",
    "check_channel",
    "check_config",
    "check_connector",
    "check_filter",
    "check_registration",
    "check_scorer",
    "check_store",
    "make_candidates",
    "make_messages",
]

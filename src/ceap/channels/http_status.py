"""HTTP status codes and ``Retry-After`` as SendResults, for every HTTP channel.

429 and 5xx (and 408, 425) are worth another try, with the wait the provider
asked for (``Retry-After``: seconds or an HTTP date, or a wait read from
the body by the channel); a 429 that names no wait is still told to wait a
second (``DEFAULT_THROTTLE``), so the rest of the batch is spared; any other
status is permanent. ``http_common.result_for`` applies the same rule.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from ceap.channels.base import SendResult

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: the wait of a 429 without Retry-After
DEFAULT_THROTTLE = 1.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date); None if absent
    or unreadable; never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable(status: int) -> bool:
    """429, 408, 425 and every 5xx."""
    return status in RETRYABLE_STATUS or status >= 500


def http_failure(key: str, status: int, headers: Mapping[str, str], error: str,
                 retryable: bool | None = None, wait: float | None = None) -> SendResult:
    """A failed answer: retryable or permanent, by ``status`` unless ``retryable`` says
    otherwise. A retryable one waits ``wait`` seconds when given (a wait the provider put in
    the body), else its ``Retry-After``, else ``DEFAULT_THROTTLE`` for a 429, else not at all.
    ``headers`` with lower-cased names (or case-insensitive). ``error`` is the result's error:
    name the status and the provider's error code, never a secret or the whole body."""
    if not (is_retryable(status) if retryable is None else retryable):
        return SendResult(key, "failed", error=error)
    if wait is None:
        wait = parse_retry_after(headers.get("retry-after"))
    if wait is None and status == 429:
        wait = DEFAULT_THROTTLE
    return SendResult(key, "failed", error=error, retryable=True, retry_after=wait)

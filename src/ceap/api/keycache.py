"""A short-lived in-process cache of API keys, so a keyed request does not read the
store every time.

A key's stored record (tenant, scopes, expiry, revocation) is kept for at most
``CEAP_API_KEY_CACHE_SECONDS`` (default 2 s; ``0`` reads the store on every request)
after it was read. The caller checks the record's status against the store's clock on
every request, so an **expiry** holds exactly. A **revocation** made in this process
(``ceap.api.auth.revoke_key``: the admin API, or the CLI run in-process) empties
every cache of the process at once; one made in another process (``ceap apikey revoke``
on another machine, another server worker) is seen by this process within the TTL.
Unknown keys are not cached: a new key works at once, and a wrong one is read (and
refused) every time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ceap.api.auth import ApiKey

TTL_ENV = "CEAP_API_KEY_CACHE_SECONDS"
DEFAULT_TTL = 2.0
#: the most keys one cache holds (only keys found in the store get in)
MAX_KEYS = 10_000


def ttl_from_env() -> float:
    """``CEAP_API_KEY_CACHE_SECONDS`` (default 2), checked: a number of seconds, 0 to 60."""
    raw = os.environ.get(TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_TTL
    try:
        ttl = float(raw)
    except ValueError:
        raise ValueError(f"{TTL_ENV}={raw!r}: expected seconds, a number from 0 to 60") from None
    if not 0 <= ttl <= 60:
        raise ValueError(f"{TTL_ENV}={raw!r}: expected seconds, a number from 0 to 60")
    return ttl


class KeyCache:
    """Stored key records by key hash, each for ``ttl`` seconds of ``clock`` (monotonic)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._found: dict[str, tuple[float, ApiKey]] = {}

    def peek(self, digest: str) -> ApiKey | None:
        """The record of a key read less than ``ttl`` ago, else None (nothing is read)."""
        hit = self._found.get(digest)
        if hit is None or self.clock() - hit[0] >= self.ttl:
            return None
        return hit[1]

    def put(self, digest: str, key: ApiKey, generation: int) -> None:
        """Keep ``key``, read when ``generation()`` was ``generation``: not if a key was
        revoked in this process since (the read may predate the revocation)."""
        if self.ttl <= 0 or generation != _generation:
            return
        found = self._found
        if len(found) >= MAX_KEYS and digest not in found:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # another thread's
                del found[next(iter(found))]  # the oldest entry
        found[digest] = (self.clock(), key)

    def clear(self) -> None:
        self._found.clear()


_generation = 0  # revocations in this process so far


def generation() -> int:
    """How many times this process revoked a key (``put`` needs the value from before its read)."""
    return _generation


_CACHES: weakref.WeakKeyDictionary[Any, KeyCache] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def cache_of(store: Any) -> KeyCache:
    """The cache of ``store`` (one per store object, made on first use)."""
    cache = _CACHES.get(store)
    if cache is None:
        with _LOCK:
            cache = _CACHES.get(store)
            if cache is None:
                cache = _CACHES[store] = KeyCache(ttl_from_env())
    return cache


def invalidate() -> None:
    """Forget every cached key of this process (a key was revoked)."""
    global _generation
    with _LOCK:
        _generation += 1
        caches = list(_CACHES.values())
    for cache in caches:
        cache.clear()

"""A short-lived in-process cache of API keys, so a keyed request does not read the
store every time.

A key's stored record (tenant, scopes, expiry, revocation) is kept for at most
``CEAP_API_KEY_CACHE_SECONDS`` (default 2 s; ``0`` reads the store on every request)
after it was read. A record in use that is older than a quarter of that
(``REFRESH_FRACTION``) is read again in a background thread, one read at a time, and
meanwhile still served: a key in steady use is never found stale by a request (before,
each worker's record expired every 2 s and the requests of that moment all took the
slow way and read the store at once; bench/README.md, issue 11). A key not in the
cache is read once for every request that wants it at that moment (``fetch``).
The caller checks the record's status against the store's clock on every request, so
an **expiry** holds exactly. A **revocation** made in this process
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
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ceap.api.auth import ApiKey

TTL_ENV = "CEAP_API_KEY_CACHE_SECONDS"
DEFAULT_TTL = 2.0
#: the most keys one cache holds (only keys found in the store get in)
MAX_KEYS = 10_000
#: a record in use older than this share of the TTL is read again in the background
REFRESH_FRACTION = 0.25

#: Loads a key's record from the store (None: no such key)
Load = Callable[[], "ApiKey | None"]


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
        self._reading: dict[str, Future[ApiKey | None]] = {}  # one read in flight per key
        self._lock = threading.Lock()

    def peek(self, digest: str, load: Load | None = None) -> ApiKey | None:
        """The record of a key read less than ``ttl`` ago, else None (nothing is read
        here). With ``load``, a record older than ``REFRESH_FRACTION`` of the TTL is read
        again in the background (``fetch``), and this one is still given."""
        hit = self._found.get(digest)
        if hit is None:
            return None
        age = self.clock() - hit[0]
        if age >= self.ttl:
            return None
        if load is not None and age >= self.ttl * REFRESH_FRACTION and digest not in self._reading:
            self.later(digest, load)
        return hit[1]

    def fetch(self, digest: str, load: Load) -> ApiKey | None:
        """Read the key now (``load``, in this thread) and keep its record; while a read
        of it is in flight, wait for that one instead (one read for every caller)."""
        with self._lock:
            reading = self._reading.get(digest)
            leader = reading is None
            if reading is None:
                reading = self._reading[digest] = Future()
        if leader:
            self._read(digest, load, reading)
        return reading.result()

    def known(self, digest: str) -> bool:
        """Whether the key was found in the store before (its record kept, maybe stale)."""
        return digest in self._found

    def later(self, digest: str, load: Load) -> Future[ApiKey | None]:
        """The read of the key in flight, or a new one in a background thread."""
        with self._lock:
            reading = self._reading.get(digest)
            if reading is not None:
                return reading
            reading = self._reading[digest] = Future()
        _readers().submit(self._read, digest, load, reading)
        return reading

    def _read(self, digest: str, load: Load, reading: Future[ApiKey | None]) -> None:
        try:
            before = generation()
            found = load()
            if found is None:
                self._found.pop(digest, None)  # gone from the store: not kept
            else:
                self.put(digest, found, before)
            reading.set_result(found)
        except Exception as exc:  # given to whoever waits (a background read's: to nobody)
            reading.set_exception(exc)
        finally:
            with self._lock:
                self._reading.pop(digest, None)

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
_READERS: list[ThreadPoolExecutor] = []


def _readers() -> ThreadPoolExecutor:
    """The threads reading keys for every cache of the process (made on first use)."""
    if not _READERS:
        with _LOCK:
            if not _READERS:
                _READERS.append(ThreadPoolExecutor(2, thread_name_prefix="ceap-key"))
    return _READERS[0]


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

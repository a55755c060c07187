"""The lean handlers of the two hot reads (ceap.api.hot) and the API key cache
(ceap.api.keycache): the same answers as the FastAPI routes, the same refusals, and a
revoked key refused at once in the process, within the cache's TTL elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app, keycache
from ceap.api.auth import create_key, list_keys, revoke_key
from ceap.api.hot import LeanRoute, bearer_key, flag_of, limit_of, plain_query
from ceap.model import InboxItem, RunRecord, utcnow
from ceap.store import Store, open_store
from ceap.testing import FakeClock
from ceap.testing.doubles import make_candidates

CANDIDATES = "/v1/customers/{customer_id}/candidates"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    now = utcnow() - timedelta(minutes=1)
    s.write_run(RunRecord("r", "default", "recs", "succeeded", now), make_candidates(
        4, now=now, customer_id=lambda i: "alice" if i < 3 else "bob", channels=["inapp"],
        program=lambda i: ["recs", "churn", "recs", "recs"][i], score=lambda i: [0.2, 0.7, 0.9, 0.5][i],
        payload=lambda i: {"n": i, "big": 2**70} if i == 0 else {"n": i}))
    s.inbox_add([InboxItem("default", "alice", f"m{i}", "recs", f"Title {i}", "Body", {"i": i})
                 for i in range(3)])
    yield s
    s.close()


class Counted:
    """Counts the requests a lean route leaves to its FastAPI route."""

    def __init__(self, route: LeanRoute):
        self.route, self.inner, self.calls = route, route.fallback, 0
        route.fallback = self  # type: ignore[assignment]
        self.path, self.endpoint = self.inner.path, self.inner.endpoint

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.inner.handle(scope, receive, send)


def counted(app: Any) -> dict[str, Counted]:
    return {r.path: Counted(r) for r in app.router.routes if isinstance(r, LeanRoute)}


def keyed(store: Store, **kwargs: Any) -> tuple[TestClient, dict[str, str], dict[str, Counted]]:
    app = create_app(store)
    key = create_key(store, "default", "tests", **kwargs)
    return TestClient(app), {"Authorization": f"Bearer {key}"}, counted(app)


def revoke_elsewhere(store: Store) -> None:
    """What `ceap apikey revoke` does in another process: every key revoked in the store."""
    with store.tx() as tx:
        tx.execute("UPDATE api_keys SET revoked_at = ?", (tx.ts(utcnow()),))


def ticking(store: Store) -> tuple[list[float], Any]:
    """The store's key cache on a clock the test moves (``ticks[0]``, in seconds)."""
    ticks = [0.0]
    cache = keycache.cache_of(store)
    cache.clock = lambda: ticks[0]
    return ticks, cache


def test_fast_answers_equal_the_fastapi_routes(store: Store) -> None:
    api, auth, spies = keyed(store)
    slow = {"/v1/customers/alice/candidates?limit=2": "/v1/customers/alice/candidates?limit=02",
            "/v1/customers/alice/candidates?channel=inapp&program=recs":
                "/v1/customers/alice/candidates?channel=inapp&program=recs&other=1",
            "/v1/customers/alice/inbox?unread=true": "/v1/customers/alice/inbox?unread=True",
            "/v1/customers/alice/inbox": "/v1/customers/alice/inbox?unread=no"}
    api.get("/v1/customers/alice/inbox", headers=auth)  # reads the key: it is cached from here
    for fast, fallback in slow.items():
        before = {p: s.calls for p, s in spies.items()}
        a, b = api.get(fast, headers=auth), api.get(fallback, headers=auth)
        assert a.status_code == b.status_code == 200
        assert a.content == b.content and a.content != b"[]"
        assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
        assert sum(s.calls for s in spies.values()) - sum(before.values()) == 1, fast  # fallback only


def test_refusals_are_the_fastapi_routes(store: Store) -> None:
    api, auth, spies = keyed(store)
    ingest_only = create_key(store, "default", "ingest", scopes=["ingest"])
    path = "/v1/customers/alice/candidates"
    assert api.get(path).json() == {"detail": "missing API key (Authorization: Bearer <key>)"}
    assert api.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get(path, headers={"Authorization": f"Bearer {ingest_only}"}).status_code == 403
    api.get(path, headers={"Authorization": f"Bearer {ingest_only}"})  # cached now, still refused
    assert api.get(path, headers={"Authorization": f"Bearer {ingest_only}"}).status_code == 403
    bad = api.get(path + "?limit=0", headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]
    assert api.get("/v1/customers/a%00b/candidates", headers=auth).status_code == 422
    assert api.head(path, headers=auth).status_code == 405  # as before: GET only
    assert spies[CANDIDATES].calls == 7  # every request above but HEAD, which never reaches it


def test_revoked_in_process_is_refused_at_once(store: Store) -> None:
    api, auth, _ = keyed(store)
    path = "/v1/customers/alice/candidates"
    assert api.get(path, headers=auth).status_code == 200
    assert api.get(path, headers=auth).status_code == 200  # served from the cached record
    revoke_key(store, "default", list_keys(store, "default")[0].id)
    refused = api.get(path, headers=auth)
    assert refused.status_code == 401 and refused.json() == {"detail": "revoked API key"}


def test_expiry_holds_exactly_with_a_cached_record(store: Store) -> None:
    clock = FakeClock(utcnow())
    store.clock = clock  # type: ignore[method-assign]
    api, auth, _ = keyed(store, expires_at=clock() + timedelta(minutes=5))
    assert api.get("/v1/customers/alice/inbox", headers=auth).status_code == 200
    assert api.get("/v1/customers/alice/inbox", headers=auth).status_code == 200
    clock.advance(minutes=5)
    assert api.get("/v1/customers/alice/inbox", headers=auth).json() == {"detail": "expired API key"}


def test_revoked_elsewhere_is_refused_within_the_ttl(store: Store) -> None:
    api, auth, _ = keyed(store)
    ticks, _ = ticking(store)
    path = "/v1/customers/alice/candidates"
    assert api.get(path, headers=auth).status_code == 200
    revoke_elsewhere(store)
    ticks[0] = keycache.DEFAULT_TTL - 0.01
    assert api.get(path, headers=auth).status_code == 200  # the bound: up to the TTL
    ticks[0] = keycache.DEFAULT_TTL
    assert api.get(path, headers=auth).status_code == 401


def test_ttl_zero_reads_the_store_every_time(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keycache.TTL_ENV, "0")
    api, auth, _ = keyed(store)
    path = "/v1/customers/alice/candidates"
    assert api.get(path, headers=auth).status_code == 200
    revoke_elsewhere(store)
    assert api.get(path, headers=auth).status_code == 401


def test_ttl_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("soon", "-1", "61"):
        monkeypatch.setenv(keycache.TTL_ENV, bad)
        with pytest.raises(ValueError, match=keycache.TTL_ENV):
            keycache.ttl_from_env()
    monkeypatch.setenv(keycache.TTL_ENV, "0.5")
    assert keycache.ttl_from_env() == 0.5


def test_a_read_from_before_a_revocation_is_not_kept() -> None:
    cache = keycache.KeyCache(5.0, clock=lambda: 0.0)
    record: Any = object()
    before = keycache.generation()
    keycache.invalidate()  # a revocation lands between the read and the put
    cache.put("h", record, before)
    assert cache.peek("h") is None
    cache.put("h", record, keycache.generation())
    assert cache.peek("h") is record


def test_without_keys_the_default_tenant_fast(store: Store) -> None:
    app = create_app(store, auth=False)
    spies = counted(app)
    got = TestClient(app).get("/v1/customers/alice/candidates?limit=5")
    assert got.status_code == 200 and len(got.json()) == 3 and spies[CANDIDATES].calls == 0


def test_parameter_parsing() -> None:
    allowed = frozenset({"limit", "channel"})
    assert plain_query(b"", allowed) == {}
    assert plain_query(b"limit=5&channel=in%20app", allowed) == {"limit": "5", "channel": "in app"}
    for odd in (b"limit=5&limit=6", b"limit=", b"other=1", b"channel=a%00b"):
        assert plain_query(odd, allowed) is None, odd
    assert [limit_of(v, 10) for v in (None, "1", "100", "101", "0", "05", "+5", " 5", "٣")] == \
        [10, 1, 100, None, None, None, None, None, None]
    assert [flag_of(v) for v in (None, "true", "1", "false", "0", "True", "yes")] == \
        [False, True, True, False, False, None, None]
    assert bearer_key([(b"authorization", b"bearer  k1 ")]) == "k1"
    assert bearer_key([(b"authorization", b"Basic k1")]) is None
    assert bearer_key([(b"authorization", b"Bearer k1"), (b"authorization", b"Bearer k2")]) == "k1"


def _settled(cache: keycache.KeyCache) -> None:
    """Until no read of a key is in flight (background reads run in their own threads)."""
    import time

    for _ in range(1000):
        if not cache._reading:
            return
        time.sleep(0.005)
    raise AssertionError("a key read never ended")


def test_a_key_in_steady_use_never_goes_stale(store: Store) -> None:
    api, auth, spies = keyed(store)
    ticks, cache = ticking(store)
    path = "/v1/customers/alice/candidates"
    assert api.get(path, headers=auth).status_code == 200  # read: the slow way, once
    assert spies[CANDIDATES].calls == 1
    for step in range(1, 9):  # a request every 0.6 x the TTL: each finds a fresh record
        ticks[0] = step * 0.6 * keycache.DEFAULT_TTL
        assert api.get(path, headers=auth).status_code == 200
        _settled(cache)  # the background read of an aged record has ended
    assert spies[CANDIDATES].calls == 1  # every later request the lean way


def test_a_known_key_gone_stale_is_read_once_on_the_lean_path(store: Store) -> None:
    api, auth, spies = keyed(store)
    ticks, _ = ticking(store)
    path = "/v1/customers/alice/candidates"
    assert api.get(path, headers=auth).status_code == 200  # first read: the FastAPI route
    ticks[0] = 3 * keycache.DEFAULT_TTL  # unused for longer than the TTL: stale
    assert api.get(path, headers=auth).status_code == 200
    assert spies[CANDIDATES].calls == 1  # read again while the request waited, then served lean
    revoke_elsewhere(store)
    ticks[0] = 6 * keycache.DEFAULT_TTL
    refused = api.get(path, headers=auth)
    assert refused.status_code == 401 and refused.json() == {"detail": "revoked API key"}


def test_a_revocation_elsewhere_reaches_a_key_in_use_in_the_background(store: Store) -> None:
    api, auth, _ = keyed(store)
    ticks, cache = ticking(store)
    path = "/v1/customers/alice/candidates"
    assert api.get(path, headers=auth).status_code == 200
    revoke_elsewhere(store)
    ticks[0] = keycache.DEFAULT_TTL / 2
    assert api.get(path, headers=auth).status_code == 200  # the record in hand, read again behind
    _settled(cache)
    assert api.get(path, headers=auth).status_code == 401  # before the TTL is up


def test_one_read_of_a_key_for_every_request_that_wants_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    waiting = [0]

    class Counted(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> Any:
            waiting[0] += 1
            return super().result(timeout)

    monkeypatch.setattr(keycache, "Future", Counted)
    cache = keycache.KeyCache(5.0, clock=lambda: 0.0)
    record: Any = object()
    reads, release = [], threading.Event()

    def load() -> Any:
        reads.append(1)
        release.wait(10)
        return record

    with ThreadPoolExecutor(8) as pool:
        calls = [pool.submit(cache.fetch, "h", load) for _ in range(8)]
        for _ in range(2000):  # one caller reads, the seven others wait for its read
            if waiting[0] == 7:
                break
            threading.Event().wait(0.005)
        release.set()
        assert [f.result(10) for f in calls] == [record] * 8
    assert len(reads) == 1 and cache.peek("h") is record and not cache._reading

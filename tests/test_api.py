"""The serving API: candidates by customer and in batch, the inbox, tenant-scoped keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from ceap.api import create_app
from ceap.api.auth import create_key
from ceap.model import InboxItem, RunRecord, utcnow
from ceap.store import Store, open_store
from ceap.testing.doubles import make_candidates


@pytest.fixture
def store(store_url: str) -> Store:
    s = open_store(store_url)
    now = utcnow()
    rows = make_candidates(
        6, now=now - timedelta(minutes=1),
        customer_id=lambda i: ["alice", "alice", "alice", "bob", "carol", "alice"][i],
        program=lambda i: ["recs", "churn", "recs", "recs", "recs", "winback"][i],
        channels=lambda i: [["inapp"], ["email"], ["inapp"], ["inapp"], ["inapp"], ["inapp"]][i],
        priority=lambda i: [0, 5, 0, 0, 0, 0][i],
        score=lambda i: [0.2, 0.1, 0.9, 0.5, 0.5, 0.95][i],
        holdout=lambda i: i == 4,                     # carol is in the control group
        status=lambda i: "held_out" if i == 4 else "pending",
        not_before=lambda i: now + timedelta(hours=1) if i == 5 else now - timedelta(minutes=1))
    s.write_run(RunRecord("r", "default", "recs", "succeeded", now), rows)
    s.write_run(RunRecord("r2", "other", "recs", "succeeded", now),
                make_candidates(1, tenant_id="other", customer_id="alice", now=now))
    yield s
    s.close()


def client(store: Store) -> tuple[TestClient, dict[str, str]]:
    key = create_key(store, "default", "tests")
    return TestClient(create_app(store)), {"Authorization": f"Bearer {key}"}


def test_candidates_of_a_customer_ranked_and_filtered(store: Store) -> None:
    api, auth = client(store)
    got = api.get("/v1/customers/alice/candidates", headers=auth).json()
    # priority first (churn), then score; the not-yet-due winback card is not shown
    assert [(c["program"], c["score"]) for c in got] == [("churn", 0.1), ("recs", 0.9), ("recs", 0.2)]
    inapp = api.get("/v1/customers/alice/candidates?channel=inapp&limit=1", headers=auth).json()
    assert [(c["program"], c["score"]) for c in inapp] == [("recs", 0.9)]


def test_empty_result_is_not_an_error(store: Store) -> None:
    api, auth = client(store)
    assert api.get("/v1/customers/nobody/candidates", headers=auth).json() == []
    held_out = api.get("/v1/customers/carol/candidates", headers=auth)
    assert held_out.status_code == 200 and held_out.json() == []  # control group sees nothing


def test_batch_form(store: Store) -> None:
    api, auth = client(store)
    got = api.post("/v1/candidates:batch", headers=auth,
                   json={"customer_ids": ["alice", "bob", "carol", "zed"], "limit": 2}).json()
    assert {k: len(v) for k, v in got.items()} == {"alice": 2, "bob": 1, "carol": 0, "zed": 0}
    bad = api.post("/v1/candidates:batch", headers=auth, json={"customer_ids": []})
    assert bad.status_code == 422


def test_keys_scope_requests_to_their_tenant(store: Store) -> None:
    api = TestClient(create_app(store))
    assert api.get("/v1/customers/alice/candidates").status_code == 401
    assert api.get("/v1/customers/alice/candidates",
                   headers={"Authorization": "Bearer nope"}).status_code == 401
    other = create_key(store, "other", "tests")
    got = api.get("/v1/customers/alice/candidates",
                  headers={"Authorization": f"Bearer {other}"}).json()
    assert [c["program"] for c in got] == ["conformance"]  # only tenant "other"'s candidate


def test_inbox_list_and_mark_read(store: Store) -> None:
    store.inbox_add([InboxItem("default", "alice", f"k{i}", "recs", f"t{i}", "b") for i in range(2)])
    api, auth = client(store)
    items = api.get("/v1/customers/alice/inbox", headers=auth).json()
    assert sorted(i["title"] for i in items) == ["t0", "t1"] and not any(i["read"] for i in items)
    assert {i["title"]: i["idempotency_key"] for i in items} == {"t0": "k0", "t1": "k1"}
    first = items[0]["id"]
    assert api.post("/v1/customers/alice/inbox/read", headers=auth,
                    json={"ids": [first]}).json() == {"marked": 1}
    unread = api.get("/v1/customers/alice/inbox?unread=true", headers=auth).json()
    assert [i["id"] for i in unread] == [items[1]["id"]]

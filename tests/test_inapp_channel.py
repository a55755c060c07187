"""The in-app channel writes to the store's inbox, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ceap.channels.inapp import InAppChannel
from ceap.errors import PluginError
from ceap.plugin import PluginContext
from ceap.store.base import Store, open_store
from ceap.testing import make_messages


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = open_store(url)
    yield store
    store.close()


@pytest.fixture
def channel(store: Store, tmp_path: Path) -> Iterator[InAppChannel]:
    channel = InAppChannel.from_dict({"type": "inapp"}, PluginContext(base_dir=tmp_path, store=store))
    yield channel
    channel.close()


def test_delivers_to_the_inbox(channel: InAppChannel, store: Store) -> None:
    messages = make_messages(3, customer_id="alice", channel="inapp",
                             payload=lambda i: {"offer": i, "url": "https://x.test/?a=1&b=ü"})
    results = channel.send(messages)
    assert [(r.idempotency_key, r.status) for r in results] == [(f"msg-{i}", "delivered") for i in range(3)]
    inbox = store.inbox_list("default", "alice")
    assert [i.idempotency_key for i in inbox] == ["msg-2", "msg-1", "msg-0"]  # newest first
    first = inbox[-1]
    assert (first.program, first.title, first.body, first.candidate_id) == \
        ("conformance", "Hello 0", "Body ✓", 1)
    assert first.payload == {"offer": 0, "url": "https://x.test/?a=1&b=ü"}
    assert first.read_at is None and first.created_at is not None
    assert store.inbox_list("default", "bob") == []


def test_duplicate_keys_are_not_delivered_twice(channel: InAppChannel, store: Store) -> None:
    messages = make_messages(2, customer_id="alice")
    channel.send(messages)
    fresh = replace(messages[0], idempotency_key="msg-new", title="fresh")
    results = channel.send([*messages, fresh, fresh])
    assert [r.status for r in results] == ["duplicate", "duplicate", "delivered", "duplicate"]
    inbox = store.inbox_list("default", "alice")
    assert sorted(i.idempotency_key for i in inbox) == ["msg-0", "msg-1", "msg-new"]
    changed = replace(messages[1], title="changed title")
    assert channel.send([changed])[0].status == "duplicate"
    assert {i.idempotency_key: i.title for i in store.inbox_list("default", "alice")}["msg-1"] == "Hello 1"


def test_keys_are_scoped_by_tenant(channel: InAppChannel, store: Store) -> None:
    channel.send(make_messages(1, customer_id="alice"))
    results = channel.send(make_messages(1, customer_id="alice", tenant_id="acme"))
    assert results[0].status == "delivered"
    assert len(store.inbox_list("acme", "alice")) == 1
    assert len(store.inbox_list("default", "alice")) == 1


def test_listing_and_marking_read(channel: InAppChannel, store: Store) -> None:
    channel.send(make_messages(4, customer_id="alice"))
    channel.send(make_messages(1, customer_id="bob", idempotency_key="bob-1"))
    ids = {i.idempotency_key: i.id for i in store.inbox_list("default", "alice")}
    assert store.inbox_mark_read("default", "alice", [ids["msg-0"], ids["msg-2"]]) == 2
    assert store.inbox_mark_read("default", "alice", [ids["msg-0"]]) == 0  # already read
    bob_id = store.inbox_list("default", "bob")[0].id
    assert store.inbox_mark_read("default", "alice", [bob_id]) == 0  # not hers
    assert store.inbox_mark_read("acme", "alice", [ids["msg-1"]]) == 0  # not this tenant's
    unread = store.inbox_list("default", "alice", unread_only=True)
    assert [i.idempotency_key for i in unread] == ["msg-3", "msg-1"]
    read = {i.idempotency_key: i.read_at for i in store.inbox_list("default", "alice")}
    assert read["msg-0"] is not None and read["msg-0"].utcoffset().total_seconds() == 0
    assert read["msg-1"] is None
    assert store.inbox_list("default", "bob", unread_only=True)[0].read_at is None


def test_empty_batch(channel: InAppChannel, store: Store) -> None:
    assert channel.send([]) == []
    assert store.inbox_list("default", "c0") == []


def test_channel_with_its_own_store_url(url: str, tmp_path: Path) -> None:
    channel = InAppChannel.from_dict({"type": "inapp", "store": url}, PluginContext(base_dir=tmp_path))
    try:
        assert [r.status for r in channel.send(make_messages(2, customer_id="zoe"))] == ["delivered"] * 2
    finally:
        channel.close()
    channel.close()  # closing twice is harmless
    reader = open_store(url)
    try:
        assert len(reader.inbox_list("default", "zoe")) == 2
        again = InAppChannel.from_dict({"type": "inapp", "store": url}, PluginContext(base_dir=tmp_path))
        try:
            assert [r.status for r in again.send(make_messages(2, customer_id="zoe"))] == ["duplicate"] * 2
        finally:
            again.close()
    finally:
        reader.close()


def test_without_a_store_it_says_so(tmp_path: Path) -> None:
    channel = InAppChannel.from_dict({"type": "inapp"}, PluginContext(base_dir=tmp_path))
    with pytest.raises(PluginError, match="inapp channel: no store"):
        channel.send(make_messages(1))

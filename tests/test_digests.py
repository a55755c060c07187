"""Digests end to end (docs/digests.md): programs run, their candidates are held, the
dispatcher collects and flushes them into one message per customer, digest key and
window, and sends it through the policies and a real channel. Every time comes from
an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from ceap.channels.email_smtp import SmtpChannel
from ceap.channels.inapp import InAppChannel
from ceap.delivery.consent_store import grant_consent, revoke_consent
from ceap.delivery.delivery_config import DeliveryConfig
from ceap.delivery.digest import Digests
from ceap.model import RunRecord
from ceap.plugin import PluginContext
from ceap.spec.loading import load_program, parse_program
from ceap.store import Store, open_store
from ceap.testing.doubles import CapturingChannel, FakeClock, make_candidates
from tests.digest_helpers import DigestProject, by_status, candidates
from tests.test_channel_email import Mailbox, Smtpd

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def smtpd() -> Iterator[Smtpd]:
    server = Smtpd(Mailbox())
    yield server
    server.stop()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def test_comments_of_an_hour_go_as_one_email_with_and_k_more(store: Store, smtpd: Smtpd,
                                                             tmp_path: Path) -> None:
    project = DigestProject(tmp_path, store, {"key": "comments", "window": "1h", "max_items": 3},
                            ["email"])
    project.profiles({"alice": {"email": "alice@example.com", "first_name": "Alice"},
                      "bob": {"email": "bob@example.com"}})
    for i, author in enumerate(["Ann", "Ben", "Cid", "Dee"], 1):
        project.comment("alice", f"a{i}", author, f"comment {i}")
    project.comment("bob", "b1", "Eve", "hi bob")
    clock = FakeClock(T0)
    email = SmtpChannel.from_dict(smtpd.config(), PluginContext(base_dir=tmp_path))
    try:
        dispatcher = project.dispatcher({"email": email}, clock)
        project.run(clock())
        assert by_status(store) == {"digest": 5}
        first = dispatcher.run()
        assert (first.claimed, first.sent) == (0, 0)
        assert by_status(store) == {"in_digest": 5}

        clock.advance(minutes=30)  # a fifth comment for alice, inside her window
        project.comment("alice", "a5", "Fay", "comment 5")
        project.run(clock())
        clock.advance(minutes=29)
        assert dispatcher.run().sent == 0 and smtpd.handler.received == []

        clock.advance(minutes=2)  # the hour has passed
        stats = dispatcher.run()
        assert (stats.claimed, stats.sent) == (2, 2)
        assert dispatcher.run().attempted == 0
    finally:
        email.close()
    [to_alice] = smtpd.handler.to("alice@example.com")
    assert to_alice["Subject"] == "5 new comment(s)"
    text = to_alice.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Hello Alice," in text
    assert "- Ann: comment 1\n- Ben: comment 2\n- Cid: comment 3\nand 2 more" in text
    assert "Dee" not in text and "Fay" not in text
    [to_bob] = smtpd.handler.to("bob@example.com")
    assert to_bob["Subject"] == "1 new comment(s)"
    assert "- Eve: hi bob" in to_bob.get_body(("plain",)).get_content()
    assert "more" not in to_bob.get_body(("plain",)).get_content()
    assert by_status(store) == {"digested": 6, "sent": 2}
    [message] = candidates(store, customer_id="alice", status="sent")
    assert message.dedup_key == "digest:comments:alice:20261125T120000000000Z"
    assert message.payload["digest"]["count"] == 5 and message.payload["digest"]["more"] == 2
    held = candidates(store, customer_id="alice", status="digested")
    assert {c.status_reason for c in held} == {f"in digest message {message.id}"}


def test_a_daily_digest_goes_at_nine_in_each_customers_time_zone(store: Store, tmp_path: Path) -> None:
    delivery = DeliveryConfig(default_timezone="America/New_York")
    project = DigestProject(tmp_path, store, {"key": "daily", "schedule": "0 9 * * *",
                                              "timezone": "customer"}, ["inapp"], delivery)
    project.profiles({"paris": {"timezone": "Europe/Paris"}, "tokyo": {"timezone": "Asia/Tokyo"},
                      "nowhere": {"timezone": None}})
    start = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # 11:00 in Paris, 19:00 in Tokyo
    for customer in ("paris", "tokyo", "nowhere"):
        for i in range(2):
            project.comment(customer, f"{customer}{i}", "Ann", f"note {i}")
    clock = FakeClock(start)
    inapp = InAppChannel.from_dict({"type": "inapp"}, PluginContext(store=store))
    dispatcher = project.dispatcher({"inapp": inapp}, clock)
    project.run(clock())
    assert dispatcher.run().sent == 0

    def inbox(customer: str) -> list[str]:
        return [i.title for i in store.inbox_list("default", customer)]

    clock.now = datetime(2026, 11, 25, 13, 59, tzinfo=UTC)  # 08:59 in New York
    assert dispatcher.run().sent == 0
    clock.now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)  # 09:00 in New York (the default zone)
    assert dispatcher.run().sent == 1
    assert (inbox("nowhere"), inbox("tokyo"), inbox("paris")) == (["2 new comment(s)"], [], [])
    clock.now = datetime(2026, 11, 25, 23, 59, tzinfo=UTC)  # 08:59 in Tokyo
    assert dispatcher.run().sent == 0
    clock.now = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    assert dispatcher.run().sent == 1
    assert (inbox("tokyo"), inbox("paris")) == (["2 new comment(s)"], [])

    project.comments = []  # the next day's run reads only the new comment
    project.comment("tokyo", "tokyo9", "Ben", "after the digest")  # opens tomorrow's window
    project.run(datetime(2026, 11, 26, 1, 0, tzinfo=UTC))
    clock.now = datetime(2026, 11, 26, 7, 59, tzinfo=UTC)  # 08:59 in Paris
    assert dispatcher.run().sent == 0
    clock.now = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)  # 09:00 in Paris
    assert dispatcher.run().sent == 1 and inbox("paris") == ["2 new comment(s)"]
    clock.now = datetime(2026, 11, 26, 23, 59, tzinfo=UTC)
    assert dispatcher.run().sent == 0
    clock.now = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)  # Tokyo's next 09:00
    assert dispatcher.run().sent == 1
    assert sorted(inbox("tokyo")) == ["1 new comment(s)", "2 new comment(s)"]
    keys = sorted(c.dedup_key for c in candidates(store, status="sent"))
    assert keys == ["digest:daily:nowhere:20261125T100000000000Z",
                    "digest:daily:paris:20261125T100000000000Z",
                    "digest:daily:tokyo:20261125T100000000000Z",
                    "digest:daily:tokyo:20261126T010000000000Z"]


def test_transactional_and_security_messages_are_never_held(store: Store, tmp_path: Path) -> None:
    project = DigestProject(tmp_path, store, {"window": "1h"}, ["capture"])
    project.comment("alice", "a1", "Ann", "hello")
    receipts = parse_program({"name": "receipts", "source": {"type": "csv", "path": "comments.csv"},
                              "action": {"type": "inform", "channels": ["capture"],
                                         "template": "receipt", "category": "transactional",
                                         "payload": {"n": 1}}})
    clock = FakeClock(T0)
    CapturingChannel.reset()
    capture = CapturingChannel.from_dict({"type": "capture", "outbox": "digest-bypass"})
    dispatcher = project.dispatcher({"capture": capture}, clock,
                                    {"comments": project.spec, "receipts": receipts})
    project.run(clock())
    project.run(clock(), receipts)  # a transactional program: sent at once, digest or not
    # a security candidate of the digest program (its category changed since): not held either
    store.write_run(RunRecord("r-sec", "default", "comments", "succeeded", T0),
                    make_candidates(1, now=T0, program="comments", customer_id="alice",
                                    channels=["capture"], template="receipt", category="security",
                                    status="digest", payload={"n": 7}, dedup_key="security-1"))
    stats = dispatcher.run()
    assert stats.sent == 2
    sent = capture.outbox("digest-bypass").messages
    assert sorted(m.program for m in sent) == ["comments", "receipts"]
    assert {m.category for m in sent} == {"transactional", "security"}
    [security] = candidates(store, status="sent", program="comments")
    assert security.dedup_key == "security-1"
    assert by_status(store) == {"in_digest": 1, "sent": 2}
    clock.advance(hours=1)
    assert dispatcher.run().sent == 1  # the comment, in its digest


def test_the_digest_message_obeys_consent_like_any_message(store: Store, tmp_path: Path) -> None:
    project = DigestProject(tmp_path, store, {"window": "1h"}, ["capture"])
    project.comment("alice", "a1", "Ann", "hello")
    project.comment("bob", "b1", "Ben", "hello")
    clock = FakeClock(T0)
    CapturingChannel.reset()
    capture = CapturingChannel.from_dict({"type": "capture", "outbox": "digest-consent"})
    dispatcher = project.dispatcher({"capture": capture}, clock)
    project.run(clock())
    dispatcher.run()
    revoke_consent(store, "default", "bob", "capture", "comments", now=clock())
    clock.advance(hours=2)
    stats = dispatcher.run()
    assert (stats.sent, stats.suppressed) == (1, 1)
    assert [m.customer_id for m in capture.outbox("digest-consent").messages] == ["alice"]
    [stopped] = candidates(store, customer_id="bob", status="suppressed")
    assert stopped.payload["digest"]["count"] == 1 and "consent" in (stopped.status_reason or "")


def test_a_window_due_while_no_dispatcher_ran_is_flushed_at_once(store: Store, tmp_path: Path) -> None:
    project = DigestProject(tmp_path, store, {"window": "30m"}, ["capture"])
    project.comment("alice", "a1", "Ann", "one")
    project.run(T0)
    clock = FakeClock(T0 + timedelta(hours=5))
    CapturingChannel.reset()
    capture = CapturingChannel.from_dict({"type": "capture", "outbox": "digest-late"})
    assert project.dispatcher({"capture": capture}, clock).run().sent == 1
    [message] = capture.outbox("digest-late").messages
    assert message.payload["digest"]["window_end"] == (T0 + timedelta(minutes=30)).isoformat()


def test_the_due_time_of_a_schedule_is_read_in_the_zone_named() -> None:
    spec = parse_program({"name": "p", "source": {"type": "csv", "path": "x.csv"},
                          "action": {"type": "inform", "channels": ["inapp"],
                                     "digest": {"schedule": "0 9 * * 1", "timezone": "Europe/Paris"}}})
    digests = Digests(None, {"p": spec}, "UTC")
    assert spec.action.digest is not None
    monday = digests.due_at(spec.action.digest, datetime(2026, 11, 25, 10, tzinfo=UTC), "Asia/Tokyo")
    assert monday == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # Monday 09:00 CET


def test_ceap_digests_lists_open_and_sent_digests(store_url: str, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from ceap.cli import app

    store = open_store(store_url)
    try:
        project = DigestProject(tmp_path, store, {"key": "comments", "window": "1h"}, ["capture"])
        project.comment("alice", "a1", "Ann", "one")
        project.comment("alice", "a2", "Ben", "two")
        project.comment("bob", "b1", "Cid", "three")
        project.run(T0)
        CapturingChannel.reset()
        capture = CapturingChannel.from_dict({"type": "capture", "outbox": "digest-cli"})
        clock = FakeClock(T0)
        project.dispatcher({"capture": capture}, clock).run()
        store.write_run(RunRecord("r2", "default", "comments", "succeeded", T0), make_candidates(
            1, now=T0 + timedelta(minutes=5), program="comments", customer_id="bob", status="digest",
            channels=["capture"], template="comments_digest", category="marketing",
            payload={"author": "Dee", "text": "four"}, dedup_key="late-bob"))
        clock.advance(minutes=61)
        assert project.dispatcher({"capture": capture}, clock).run().sent == 2
    finally:
        store.close()
    runner = CliRunner()
    result = runner.invoke(app, ["--project", str(tmp_path), "--store", store_url, "digests",
                                 "--json"], env={"CEAP_STORE": None})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted((r["customer_id"], r["key"], r["items"], r["status"]) for r in rows) == [
        ("alice", "comments", 2, "sent"), ("bob", "comments", 2, "sent")]
    assert all(r["due_at"].startswith("2026-11-25T13:00:00") for r in rows)
    result = runner.invoke(app, ["--project", str(tmp_path), "--store", store_url, "digests",
                                 "--status", "open", "--json"], env={"CEAP_STORE": None})
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    bad = runner.invoke(app, ["--project", str(tmp_path), "--store", store_url, "digests",
                              "--status", "held"], env={"CEAP_STORE": None})
    assert bad.exit_code == 2 and "open or sent" in bad.output


def test_removing_a_programs_digest_sends_what_it_held(store: Store, tmp_path: Path) -> None:
    project = DigestProject(tmp_path, store, {"window": "1h", "max_items": 1}, ["capture"])
    (tmp_path / "templates" / "comments_digest.yaml").write_text(yaml.safe_dump({"default": {
        "title": "{% if digest is defined %}{{ digest.count }} comments{% else %}a comment{% endif %}",
        "body": "{{ payload.text | default('') }}"}}))
    project.comment("alice", "a1", "Ann", "one")
    project.comment("alice", "a2", "Ben", "two")
    project.run(T0)
    clock = FakeClock(T0)
    CapturingChannel.reset()
    capture = CapturingChannel.from_dict({"type": "capture", "outbox": "digest-removed"})
    assert project.dispatcher({"capture": capture}, clock).run().sent == 0  # both in a digest
    project.comment("alice", "a3", "Cid", "three")
    project.run(T0 + timedelta(minutes=1))  # held, not collected yet
    plain = parse_program({**project.spec.model_dump(mode="json", exclude_none=True),
                           "action": {**project.spec.action.model_dump(mode="json", exclude_none=True,
                                                                        exclude={"digest"})}})
    assert plain.action.digest is None
    clock.advance(minutes=2)
    dispatcher = project.dispatcher({"capture": capture}, clock, {"comments": plain})
    stats = dispatcher.run()
    assert stats.sent == 1  # the third comment, on its own
    [alone] = capture.outbox("digest-removed").messages
    assert (alone.title, alone.payload["text"]) == ("a comment", "three")
    assert [c.subject_id for c in candidates(store, status="sent")] == ["a3"]
    clock.advance(hours=1)
    assert dispatcher.run().sent == 1  # the digest the first two were in, when due
    last = capture.outbox("digest-removed").messages[-1]
    assert (last.title, last.payload["digest"]["count"], last.payload["digest"]["more"]) == (
        "2 comments", 2, 0)


def test_preview_of_a_digest_program_lists_the_held_items(store: Store, tmp_path: Path) -> None:
    from ceap.delivery.templates.previews import preview

    project = DigestProject(tmp_path, store, {"window": "1h", "max_items": 2}, ["webhook"])
    (tmp_path / "programs").mkdir()
    (tmp_path / "programs" / "comments.yaml").write_text(
        yaml.safe_dump(project.spec.model_dump(mode="json", exclude_none=True)))
    sample = preview(tmp_path, "comments", "alice", store)
    assert (sample["webhook"].title, sample["webhook"].body) == (
        "2 new comment(s)", "<author>; <author>;")  # nothing held: two sample items
    for i, author in enumerate(["Ann", "Ben", "Cid"]):
        project.comment("alice", f"a{i}", author, "hi")
    project.run(T0)
    held = preview(tmp_path, "comments", "alice", store)["webhook"]
    assert (held.title, held.body) == ("3 new comment(s)", "Ann; Ben; and 1 more")


def test_a_real_time_programs_events_are_held_and_sent_as_one_digest(store: Store, tmp_path: Path) -> None:
    from tests.test_realtime import T0 as RT0
    from tests.test_realtime import Project

    realtime = Project(tmp_path, store)
    realtime.program("mentions", source={
        "type": "events", "on": ["comment_posted"], "subject_id": "comment_id",
        "columns": {"comment_id": "string", "author": "string", "text": "string"}},
        selection={"one_per_customer": False},
        action={"type": "inform", "channels": ["capture"], "template": "comments_digest",
                "payload_columns": ["author", "text"], "digest": {"window": "30m", "max_items": 2}})
    DigestProject(tmp_path, store, {"window": "30m"}, ["capture"])  # writes the templates
    for i, minutes in enumerate([0, 5, 10, 45]):
        realtime.event(f"e{i}", "alice", "comment_posted", minutes, comment_id=f"m{i}",
                       author=f"Au{i}", text=f"t{i}")
    realtime.replay(batch=2)
    assert by_status(store) == {"digest": 4}
    spec = load_program(tmp_path / "programs" / "mentions.yaml")
    project = DigestProject(tmp_path, store, {"window": "30m"}, ["capture"])
    CapturingChannel.reset()
    capture = CapturingChannel.from_dict({"type": "capture", "outbox": "digest-realtime"})
    clock = FakeClock(RT0 + timedelta(minutes=31))
    dispatcher = project.dispatcher({"capture": capture}, clock, {"mentions": spec})
    assert dispatcher.run().sent == 1  # the window of the events at 0, 5 and 10 minutes
    [first] = capture.outbox("digest-realtime").messages
    assert (first.title, first.body) == ("3 new comment(s)", "Au0; Au1; and 1 more")
    clock.advance(minutes=45)  # the event at 45 minutes opened the next window
    assert dispatcher.run().sent == 1
    assert capture.outbox("digest-realtime").messages[-1].title == "1 new comment(s)"


def test_quiet_hours_defer_a_digest_message_due_at_night(store: Store, tmp_path: Path) -> None:
    project = DigestProject(tmp_path, store, {"schedule": "0 23 * * *", "timezone": "Europe/Paris"},
                            ["sms"])
    project.profiles({"alice": {"phone": "+33600000001", "timezone": "Europe/Paris"}})
    project.comment("alice", "a1", "Ann", "hello")
    project.run(T0)
    grant_consent(store, "default", "alice", "sms", now=T0)  # marketing SMS is opt-in
    CapturingChannel.reset()
    sms = CapturingChannel.from_dict({"type": "capture", "outbox": "digest-night"})
    clock = FakeClock(datetime(2026, 11, 25, 22, 0, tzinfo=UTC))  # 23:00 in Paris: the digest is due
    dispatcher = project.dispatcher({"sms": sms}, clock)
    stats = dispatcher.run()
    assert (stats.claimed, stats.deferred, stats.sent) == (1, 1, 0)  # quiet hours until 08:00
    [waiting] = candidates(store, status="pending")
    assert waiting.not_before == datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    clock.now = datetime(2026, 11, 26, 7, 0, tzinfo=UTC)
    assert dispatcher.run().sent == 1


def test_two_dispatchers_flushing_at_once_write_one_message_per_digest(store_url: str,
                                                                       tmp_path: Path) -> None:
    import threading

    first, second = open_store(store_url), open_store(store_url)
    try:
        project = DigestProject(tmp_path, first, {"window": "1h"}, ["capture"])
        for i in range(300):
            project.comment(f"c{i}", f"m{i}a", "Ann", "one")
            project.comment(f"c{i}", f"m{i}b", "Ben", "two")
        project.run(T0)
        runners = [Digests(s, {"comments": project.spec}) for s in (first, second)]
        later = T0 + timedelta(hours=2)
        barrier = threading.Barrier(2)

        def work(runner: Digests) -> None:
            barrier.wait()
            for _ in range(3):
                runner.step(later)

        threads = [threading.Thread(target=work, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        messages = candidates(first, status="pending")
        assert sorted(m.customer_id for m in messages) == sorted(f"c{i}" for i in range(300))
        assert {m.payload["digest"]["count"] for m in messages} == {2}
        assert by_status(first) == {"digested": 600, "pending": 300}
    finally:
        first.close()
        second.close()

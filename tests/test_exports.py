"""The outbound stream: sent, suppressed, engaged and converted records reach
files, a signed webhook and a stream once each (at least once on failure, with
stable ids), after the grace period, tenant by tenant."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pydantic import TypeAdapter

from ceap.channels.webhook import verify
from ceap.outcomes.attribution import attribute
from ceap.outcomes.config import ExportConfig
from ceap.outcomes.engagement import Engagement, record
from ceap.outcomes.exports import run_export
from ceap.outcomes.goals import record_goal_events
from ceap.outcomes.sinks import ExportError
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedStream
from ceap.spec.program import Goal
from ceap.store import Store, open_store
from tests.outcome_helpers import add_delivery, events, seed

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def store(store_url: str) -> Any:
    s = open_store(store_url)
    yield s
    s.close()


def export(**config: Any) -> Any:
    return TypeAdapter(ExportConfig).validate_python(config)


def history(store: Store) -> dict[str, Any]:
    """One of each: a sent delivery, a suppressed one, an engagement and a conversion."""
    sent, held = seed(store, T0, 2, customer_id=lambda i: ["ana", "ben"][i])
    delivery = add_delivery(store, sent, sent_at=T0 + H)
    add_delivery(store, held, sent_at=None, status="suppressed", created_at=T0 + H, policy="quiet_hours")
    record(store, [Engagement("default", "ana", "opened", T0 + 2 * H, "pixel", f"opened:{delivery}",
                              delivery, sent, "offer", "email")], now=T0 + 2 * H)
    record_goal_events(store, events({"id": "o1", "type": "purchase", "ts": (T0 + 3 * H).isoformat(),
                                      "customer_id": "ana", "attributes": {"amount": 12.5}}),
                       {"purchase": "amount"}, T0)
    goal = Goal(event="purchase", within="1d", value="amount")
    attribute(store, [type("P", (), {"name": "offer", "goal": goal})()], now=T0 + 4 * H)
    return {"sent": sent, "held": held, "delivery": delivery}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_record_goes_out_once_in_jsonl(store: Store, tmp_path: Path) -> None:
    ids = history(store)
    config = export(type="jsonl", path="out/records.jsonl", grace="30s")
    assert run_export(store, config, "default", T0 + 5 * H, tmp_path) == \
        {"sent": 1, "suppressed": 1, "engaged": 1, "converted": 1}
    found = read_jsonl(tmp_path / "out" / "records.jsonl")
    assert [(r["kind"], r["id"]) for r in found] == [
        ("sent", f"sent:default:{ids['delivery']}"),
        ("suppressed", f"suppressed:default:{ids['delivery'] + 1}"),
        ("engaged", f"engaged:default:opened:{ids['delivery']}"),
        ("converted", "converted:default:offer:o1")]
    sent, suppressed, engaged, converted = found
    assert (sent["customer_id"], sent["channel"], sent["ts"]) == ("ana", "email", "2026-05-01T10:00:00Z")
    assert (suppressed["customer_id"], suppressed["reason"]) == ("ben", "quiet_hours")
    assert (engaged["type"], engaged["source"]) == ("opened", "pixel")
    assert engaged["delivery_id"] == ids["delivery"]
    assert (converted["value"], converted["type"]) == (12.5, "purchase")
    assert converted["candidate_id"] == ids["sent"]
    assert run_export(store, config, "default", T0 + 6 * H, tmp_path) == \
        {"sent": 0, "suppressed": 0, "engaged": 0, "converted": 0}
    assert len(read_jsonl(tmp_path / "out" / "records.jsonl")) == 4


def test_records_younger_than_the_grace_wait_for_the_next_pass(store: Store, tmp_path: Path) -> None:
    history(store)
    config = export(type="jsonl", path="r.jsonl", grace="2h", kinds=["sent", "engaged"])
    # at T0+3h the cursor may reach T0+1h: the send (T0+1h) goes, the open (recorded T0+2h) waits
    assert run_export(store, config, "default", T0 + 3 * H, tmp_path) == {"sent": 1, "engaged": 0}
    assert run_export(store, config, "default", T0 + 4 * H, tmp_path) == {"sent": 0, "engaged": 1}
    assert [r["kind"] for r in read_jsonl(tmp_path / "r.jsonl")] == ["sent", "engaged"]


def test_parquet_windows_are_rewritten_not_duplicated(store: Store, tmp_path: Path) -> None:
    history(store)
    config = export(type="parquet", path="lake", kinds=["sent", "suppressed"], batch=1)
    assert run_export(store, config, "default", T0 + 5 * H, tmp_path) == {"sent": 1, "suppressed": 1}
    files = sorted((tmp_path / "lake").glob("*.parquet"))
    assert [f.name.split("-")[0] for f in files] == ["sent", "suppressed"]
    table = pq.read_table(files[0])
    assert table.column("kind").to_pylist() == ["sent"] and table.schema.field("ts").type.tz == "UTC"
    with store.tx() as tx:  # a crash after the files were written, before the cursors moved
        tx.execute("DELETE FROM export_cursors")
    run_export(store, config, "default", T0 + 5 * H, tmp_path)
    assert sorted((tmp_path / "lake").glob("*.parquet")) == files  # the same windows, the same files
    assert sum(pq.read_table(f).num_rows for f in files) == 2


def test_tenants_are_exported_separately(store: Store, tmp_path: Path) -> None:
    history(store)
    [other] = seed(store, T0, tenant_id="acme", run="r2")
    add_delivery(store, other, sent_at=T0 + H)
    config = export(type="jsonl", path="acme.jsonl", kinds=["sent"])
    assert run_export(store, config, "acme", T0 + 5 * H, tmp_path) == {"sent": 1}
    assert [r["tenant_id"] for r in read_jsonl(tmp_path / "acme.jsonl")] == ["acme"]


class Receiver(BaseHTTPRequestHandler):
    answers: list[int] = []
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.answers, Receiver.received = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/ceap"
    server.shutdown()
    server.server_close()


def test_a_signed_webhook_gets_every_record_and_a_failure_resends_the_same_ids(
        store: Store, tmp_path: Path, receiver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_SECRET", "export-signing-secret")
    history(store)
    config = export(type="webhook", url=receiver, secret_env="EXPORT_SECRET", allow_private=True, batch=10)
    Receiver.answers = [200, 503]  # sent goes through, suppressed fails
    with pytest.raises(ExportError, match="HTTP 503"):
        run_export(store, config, "default", T0 + 5 * H, tmp_path)
    assert run_export(store, config, "default", T0 + 5 * H, tmp_path) == \
        {"sent": 0, "suppressed": 1, "engaged": 1, "converted": 1}  # the send is not sent twice
    bodies = [json.loads(body) for _, body in Receiver.received]
    assert [[r["kind"] for r in b["data"]] for b in bodies] == [["sent"], ["suppressed"], ["engaged"],
                                                                ["converted"]]
    assert {b["type"] for b in bodies} == {"ceap.outcomes"}
    for headers, body in Receiver.received:
        assert verify(b"export-signing-secret", headers, body, now=float(headers["webhook-timestamp"]))
        assert not verify(b"another-secret", headers, body, now=float(headers["webhook-timestamp"]))
    # the webhook-id is a function of the records: a resend carries the same one
    first_id = Receiver.received[1][0]["webhook-id"]
    Receiver.received.clear()
    with store.tx() as tx:
        tx.execute("DELETE FROM export_cursors WHERE source = 'suppressed'")
    run_export(store, config, "default", T0 + 5 * H, tmp_path)
    assert [h["webhook-id"] for h, _ in Receiver.received] == [first_id]


def test_a_webhook_to_a_private_address_is_refused_unless_allowed(store: Store, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORT_SECRET", "export-signing-secret")
    history(store)
    config = export(type="webhook", url="http://127.0.0.1:9/x", secret_env="EXPORT_SECRET")
    with pytest.raises(ExportError, match="not a public address"):
        run_export(store, config, "default", T0 + 5 * H, tmp_path)
    monkeypatch.delenv("EXPORT_SECRET")
    with pytest.raises(ExportError, match="EXPORT_SECRET"):
        run_export(store, config, "default", T0 + 5 * H, tmp_path)


def test_a_stream_export_publishes_one_message_per_record(store: Store, tmp_path: Path) -> None:
    history(store)
    context = PluginContext(base_dir=tmp_path, store=store)
    name = f"outcomes-{uuid.uuid4().hex[:8]}"

    def opener(stream: str) -> Any:
        return EmbeddedStream.from_dict({"type": "embedded", "stream": stream}, context)

    config = export(type="stream", stream=name)
    assert sum(run_export(store, config, "default", T0 + 5 * H, tmp_path, opener).values()) == 4
    messages = [json.loads(m.body) for m in opener(name).poll(10, 0)]
    assert [m["kind"] for m in messages] == ["sent", "suppressed", "engaged", "converted"]

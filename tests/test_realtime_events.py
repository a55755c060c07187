"""Event validation: the column-wise check accepts exactly what ``EventIn`` accepts,
with the same values, and every rejected event keeps its own precise reason."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from ceap.model import DEFAULT_TENANT
from ceap.realtime.events import (
    EVENT_SCHEMA,
    EventIn,
    _first_error,
    from_eventbridge,
    parse_bodies,
    validate_events,
)

GOOD = {"id": "e1", "type": "app_crash", "ts": "2026-11-25T10:00:00Z", "customer_id": "C1",
        "attributes": {"app": "ios"}}


def one_by_one(items: list[Any], tenant: str = DEFAULT_TENANT) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The reference: every item through ``EventIn`` (what validate_events did before the
    column-wise check)."""
    rows: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
    rejected = []
    for i, item in enumerate(items):
        try:
            if isinstance(item, dict) and "detail-type" in item:
                item = from_eventbridge(item)
            event = EventIn.model_validate(item)
        except ValidationError as exc:
            rejected.append((i, _first_error(exc)))
            continue
        except ValueError as exc:
            rejected.append((i, str(exc)))
            continue
        rows["event_id"].append(event.id)
        rows["tenant_id"].append(event.tenant_id or tenant)
        rows["customer_id"].append(event.customer_id)
        rows["type"].append(event.type)
        rows["ts"].append(event.ts.replace(tzinfo=None))
        rows["attributes"].append(json.dumps(event.attributes, separators=(",", ":"), default=str))
    return pa.table(rows, schema=EVENT_SCHEMA), rejected


VARIANTS: dict[str, list[Any]] = {
    "id": ["e1", "", "x" * 255, "x" * 256, 7, None, "é" * 255, ["e"], True],
    "type": ["app_crash", "a.b:c-d", "", "x" * 100, "x" * 101, "bad type", "crash\n", "é", 3, None],
    "ts": ["2026-11-25T10:00:00Z", "2026-11-25T10:00:00.5Z", "2026-11-25T10:00:00.123456+05:30",
           "2026-11-25T10:00Z", "2026-11-25T10:00:00-00:00", "2026-11-25T10:00:00+23:59",
           "2026-11-25T10:00:00", "2026-11-25 10:00:00Z", "2026-11-25", "1700000000", 1700000000,
           1.7e9, "2026-11-25T10:00:00.1234567Z", "2026-02-30T10:00:00Z", "2026-11-25T24:00:00Z",
           "2026-11-25T23:59:60Z", "2026-11-25t10:00:00z", "1899-12-31T23:00:00-02:00",
           "2026-11-25T10:00:00+24:00", "yesterday", "", None],
    "customer_id": ["C1", None, "", "c" * 255, "c" * 256, 42],
    "tenant_id": ["acme", None, "", "a b", "t-1_x", 5],
    "attributes": [{"app": "ios"}, {}, None, [], "x", {"n": 1.5, "big": 10 ** 20, "s": "é\n",
                                                      "nested": {"a": [1, None, True]}}],
}


def variants() -> list[Any]:
    items: list[Any] = []
    for field, values in VARIANTS.items():
        for value in values:
            items.append({**GOOD, "id": f"{field}-{len(items)}", field: value}
                         if field != "id" else {**GOOD, "id": value})
    items += [{k: v for k, v in GOOD.items() if k != drop} for drop in GOOD]  # each field missing
    items += [{**GOOD, "extra": 1}, None, 3, "text", [GOOD], {}]
    items.append({"version": "0", "id": "eb-1", "detail-type": "app_crash", "source": "app",
                  "time": "2026-11-25T10:00:00Z", "detail": {"customer_id": "B", "app": "ios"}})
    items.append({"id": "eb-2", "detail-type": "x", "time": "2026-11-25T10:00:00Z"})
    return items


def same(items: list[Any], tenant: str = DEFAULT_TENANT) -> None:
    table, rejected = validate_events(items, tenant)
    expected, expected_rejected = one_by_one(items, tenant)
    assert rejected == expected_rejected
    assert table.schema == EVENT_SCHEMA
    assert table.to_pylist() == expected.to_pylist()


def test_column_check_matches_one_by_one_validation_on_every_variant() -> None:
    items = variants()
    same(items)
    same(items, tenant="other")
    for item in items:   # alone too: a batch that is all fast, all slow, or empty
        same([item])
    same([])


def test_mixed_batches_keep_their_order_and_reasons() -> None:
    items = variants()
    rng = random.Random(3)
    for _ in range(30):
        batch = [rng.choice(items) for _ in range(rng.randrange(1, 40))]
        same(batch)
    good = [{**GOOD, "id": f"g{i}"} for i in range(50)]
    same(good)                                   # all through the column check
    same([*good[:10], {**GOOD, "ts": "2026-02-30T00:00:00Z"}, *good[10:]])  # one bad date in many


def test_bad_events_get_a_clear_reason_each() -> None:
    items = [GOOD, {**GOOD, "ts": "yesterday"}, {**GOOD, "id": 7}, {**GOOD, "extra": 1},
             {**GOOD, "type": "bad type"}, {**GOOD, "attributes": []}, {**GOOD, "ts": "2026-02-30T10:00:00Z"}]
    table, rejected = validate_events(items)
    assert table.column("event_id").to_pylist() == ["e1"]
    reasons = dict(rejected)
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert reasons[1].startswith("ts: ") and reasons[6].startswith("ts: ")
    assert reasons[2].startswith("id: ") and reasons[3] == "extra: unknown field"
    assert reasons[4].startswith("type: ") and reasons[5].startswith("attributes: ")


def test_parse_bodies_reads_objects_lists_and_names_what_is_not_json() -> None:
    good = json.dumps(GOOD).encode()
    bodies = [good, b'{"id": "e2", "type": "t", "ts": "2026-11-25T10:00:00Z"}  ',
              json.dumps([{**GOOD, "id": "l1"}, {**GOOD, "id": "l2"}]).encode(),
              b"{not json}", b"", b'{"id": "e3"} {"id": "e4"}',
              json.dumps({**GOOD, "id": "u16"}).encode("utf-16"),
              json.dumps({**GOOD, "id": "é"}, ensure_ascii=False).encode()]
    table, rejected = parse_bodies(bodies)
    assert table.column("event_id").to_pylist() == ["e1", "e2", "l1", "l2", "u16", "é"]
    broken = sorted({i for i, reason in rejected if reason.startswith("not JSON")})
    assert broken == [4, 5, 6]
    for body in (b"{not json}", b"", b'{"id": "e3"} {"id": "e4"}'):
        with pytest.raises(ValueError) as exc:
            json.loads(body)
        assert any(reason == f"not JSON: {exc.value}" for _, reason in rejected)


# -- the worker reads only the history that can change a row ---------------------------
T0 = "2026-11-20T10:00:00+00:00"
PROGRAMS = {
    "crashes": {"source": {"type": "events", "on": ["app_crash"], "columns": {"app": "string"},
                           "subject_id": "event_id"},
                "state": {"crashes_2h": {"count": "app_crash", "window": "2h"},
                          "ios_crashes_2h": {"count": "app_crash", "window": "2h",
                                             "where": "attributes->>'app' = 'ios'"},
                          "last_page": {"last": "page_view.page"},
                          "since_login": {"time_since": "login"}},
                "filters": [{"id": "two", "expr": "crashes_2h >= 2"}],
                "selection": {"dedup_window": "1m", "one_per_customer": False},
                "action": {"type": "alert", "channels": ["sms"],
                           "payload_columns": ["crashes_2h", "ios_crashes_2h", "last_page", "since_login"]}},
    "takeover": {"source": {"type": "events", "on": ["email_changed"], "subject_id": "event_id"},
                 "state": {"pw_then_email": {"sequence": {"first": "password_changed",
                                                          "then": "email_changed"},
                                             "within": "10m", "capture": ["phone"]}},
                 "filters": [{"id": "sequence", "expr": "pw_then_email"}],
                 "selection": {"dedup_window": "1m", "one_per_customer": False},
                 "action": {"type": "protect", "channels": ["sms"],
                            "payload_columns": ["pw_then_email_phone"]}},
}


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    from datetime import datetime, timedelta

    rng = random.Random(seed)
    start = datetime.fromisoformat(T0)
    kinds = ["app_crash", "page_view", "login", "purchase", "password_changed", "email_changed"]
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        attrs: dict[str, Any] = {"app": rng.choice(["ios", "android"])} if kind == "app_crash" else {}
        if kind == "page_view":
            attrs = {"page": rng.choice(["/a", "/b", "/c"])}
        if kind == "password_changed":
            attrs = {"phone": f"+1555{i:04d}"}
        out.append({"id": f"e{i}", "type": kind, "customer_id": f"C{rng.randrange(6)}",
                    "ts": (start + timedelta(minutes=3 * i)).isoformat(), "attributes": attrs})
    return out


def _candidates(tmp: Any, events: list[dict[str, Any]], batch: int) -> list[tuple[Any, ...]]:
    import yaml

    from ceap.model import CandidateQuery
    from ceap.plugin import PluginContext
    from ceap.realtime.replay import ReplayConnector
    from ceap.realtime.worker import Worker
    from ceap.store import open_store

    tmp.mkdir()
    (tmp / "programs").mkdir()
    for name, spec in PROGRAMS.items():
        (tmp / "programs" / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **spec}))
    (tmp / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    store = open_store(f"sqlite:///{tmp / 'rt.db'}")
    context = PluginContext(base_dir=tmp, store=store)
    source = ReplayConnector.from_dict({"type": "replay", "path": "events.jsonl"}, context)
    Worker(store, source, tmp / "programs", context, batch=batch).run(until_idle=True)
    found = store.candidates(CandidateQuery(limit=10_000, include_expired=True))
    store.close()
    return sorted((c.program, c.customer_id, c.subject_id, c.created_at,
                   json.dumps(c.payload, sort_keys=True)) for c in found)


def test_features_from_history_match_features_from_one_batch(tmp_path: Any) -> None:
    """One event per micro-batch (every feature comes from the logged history, read by
    type and customer) gives the same candidates as all events in one micro-batch."""
    events = _events(150, seed=5)
    one_by_one = _candidates(tmp_path / "one", events, batch=1)
    mixed = _candidates(tmp_path / "mixed", events, batch=7)
    all_at_once = _candidates(tmp_path / "all", events, batch=1000)
    assert one_by_one == mixed == all_at_once
    assert {p for p, *_ in all_at_once} == {"crashes", "takeover"}


def test_batches_of_plain_dicts_read_in_one_conversion_match_one_by_one() -> None:
    """A batch whose items are all dicts of known fields takes one Arrow conversion of their
    text fields; text Arrow or a store cannot hold, and a value of another type, still get
    EventIn's reason."""
    good = [{**GOOD, "id": f"g{i}", "customer_id": f"C{i}"} for i in range(8)]
    odd = [{**GOOD, "id": "\ud800"}, {**GOOD, "customer_id": "C\x00"}, {**GOOD, "type": "\U0001f600"},
           {**GOOD, "tenant_id": "\udfff"}, {**GOOD, "ts": "2026-11-25T10:00:00\ud800"},
           {**GOOD, "customer_id": None}, {**GOOD, "id": 7}, {**GOOD, "attributes": {"k\ud800": 1}}]
    same(good)
    for item in odd:
        for at in (0, 4, 8):
            same([*good[:at], item, *good[at:]])


def _json_texts(rng: random.Random) -> list[Any]:
    """Values as read from JSON: numbers of every magnitude, text of every ASCII character
    and some beyond, nesting; each a dict (an event's ``attributes``)."""
    def number() -> Any:
        kind = rng.randrange(4)
        if kind == 0:
            return rng.randrange(-(2**63), 2**63)
        if kind == 1:
            return rng.uniform(-1, 1) * 10.0 ** rng.randrange(-330, 309)
        if kind == 2:
            return round(rng.uniform(-1e6, 1e6), rng.randrange(0, 8))
        return float(rng.randrange(-(10**17), 10**17))
    def text() -> str:
        alphabet = [chr(c) for c in range(0, 128)] + ["é", "\u2028", "\U0001f600", "e", "+", "-", "0", "."]
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
    def value(depth: int = 0) -> Any:
        kind = rng.randrange(7 if depth < 3 else 5)
        return [number, text, lambda: rng.choice([True, False, None]), lambda: "plain",
                lambda: rng.randrange(100), lambda: [value(depth + 1) for _ in range(rng.randrange(3))],
                lambda: {text(): value(depth + 1) for _ in range(rng.randrange(3))}][kind]()
    return [json.loads(json.dumps({text(): value() for _ in range(rng.randrange(4))}))
            for _ in range(2000)]


def test_orjson_attributes_text_is_json_dumps_text() -> None:
    """Values read from JSON: the column of attribute texts written through orjson is
    ``json.dumps``'s, value by value (numbers of every magnitude, escapes, non-ASCII text,
    integers beyond 64 bits, lone surrogates, values that are not objects, values holding
    the text that separates them in the batch's one orjson call)."""
    from ceap.realtime.attributes_text import ORJSON_AS_JSON, encode_attributes, encode_decoded

    assert ORJSON_AS_JSON  # this orjson's numbers are json's or found as maybe otherwise
    rng = random.Random(11)
    values = _json_texts(rng)
    plain = [{"app": "ios", "n": i, "amount": i / 7, "ok": True, "tags": ["a", None]} for i in range(200)]
    for batch in (values, plain, [*plain, {"big": 10**20}], [*plain, {"s": "\ud800"}],
                  [*plain[:5], [1], "x", *plain[5:]], [{"t": "one-time e-mail"}, {"x": 1e-05}],
                  [*plain, {"a": [1, "\x1f", 2]}, *plain], [{"a": [1, "\x1f"]}, {"s": "\x1f"}], [{}], []):
        ok = np.fromiter((type(v) is dict for v in batch), dtype=bool, count=len(batch))
        expected = [encode_attributes(v) if good else "{}" for v, good in zip(batch, ok, strict=True)]
        assert expected == [json.dumps(v, separators=(",", ":"), default=str) if good else "{}"
                            for v, good in zip(batch, ok, strict=True)]
        got = encode_decoded(batch, ok)
        got.validate(full=True)
        assert got.to_pylist() == expected


def test_items_read_from_json_give_the_same_events() -> None:
    """``decoded`` (items read from JSON: their attributes' text written by orjson where it
    is json's) changes no event and no reason."""
    texts = _json_texts(random.Random(5))[:300]
    items = json.loads(json.dumps([*variants(), *({**GOOD, "id": f"j{i}", "attributes": a}
                                                  for i, a in enumerate(texts))]))
    for batch in (items, items[:40], [i for i in items if isinstance(i, dict) and "detail-type" not in i]):
        expected = validate_events(batch)
        got = validate_events(batch, decoded=True)
        assert got[1] == expected[1]
        assert got[0].to_pylist() == expected[0].to_pylist()


def test_a_body_that_is_not_json_is_rejected_once_with_that_reason() -> None:
    from ceap.realtime.eventtime import parse_received
    from ceap.realtime.source import Received

    good = json.dumps(GOOD).encode()
    bad_ts = json.dumps({**GOOD, "id": "e9", "ts": "yesterday"}).encode()
    table, rejected = parse_bodies([b"not json", good, bad_ts])
    assert table.column("event_id").to_pylist() == ["e1"]
    assert [i for i, _ in rejected] == [0, 2]
    assert rejected[0][1].startswith("not JSON: ") and rejected[1][1].startswith("ts: ")
    for partitions in (["p0"] * 3, ["p0", "p1", "p0"]):  # one partition, and several
        received = [Received(b, i, p) for i, (b, p) in enumerate(zip([b"not json", good, bad_ts],
                                                                      partitions, strict=True))]
        table, problems, parts = parse_received(received)
        assert [i for i, _ in problems] == [0, 2], problems
        assert problems[0][1].startswith("not JSON: ")
        assert parts.to_pylist() == [partitions[1]]
    from ceap.realtime.eventtime import rejected_rows
    rows = rejected_rows([Received(b"\xff{", 0), Received(b"[1]", 1)],
                         [(0, "not JSON: x"), (1, "not an object")])
    assert rows == [("\ufffd{", "not JSON: x"), ("1", "not an object")]

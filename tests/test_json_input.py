"""The JSON and JSON Lines readers of ingest, the stream worker and `ceap publish`, fuzzed:
whatever the bytes, the only error is a ``ValueError`` that says what is wrong (issue 8 §2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ceap.api import create_app
from ceap.cli import app
from ceap.json_input import (
    MAX_DEPTH,
    JsonInputError,
    depth,
    find_bad_text,
    json_lines,
    json_loads,
    loads,
    loads_many,
)
from ceap.plugin import PluginContext
from ceap.realtime.embedded import EmbeddedStream
from ceap.realtime.events import parse_bodies, validate_events
from ceap.store import open_store

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD = {"id": "e1", "type": "app_crash", "ts": "2026-11-25T10:00:00Z", "customer_id": "C1"}

# JSON values with any text, lone surrogates included
texts = st.text(st.characters(exclude_categories=()) | st.sampled_from(
    ["\ud800", "\udfff", "\U0001f600", "\u00e9", "\x00", '"', "\\", "[", "}"]), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20)
# bytes that look like JSON often: brackets, quotes, escapes, and anything else
json_ish = st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b'\\"', b":", b",", b"1",
                                     b"null", b"\\ud800", b"\xed\xa0\x80", b"\xff", b"NaN", b" ", b"\n"])
                    | st.binary(max_size=4), max_size=60).map(b"".join)
event_bodies = st.integers(0, 99).map(lambda i: json.dumps(dict(GOOD, id=f"e{i}")).encode())


def nesting(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    return 0


@FUZZ
@given(st.binary(max_size=200) | json_ish)
def test_loads_raises_only_value_errors(data: bytes) -> None:
    try:
        loads(data)
    except ValueError as exc:
        assert str(exc)


@FUZZ
@given(json_values)
def test_depth_is_the_nesting_of_the_value(value: Any) -> None:
    escaped, raw = json.dumps(value), json.dumps(value, ensure_ascii=False)
    for text in (escaped, raw):
        assert depth(text.encode("utf-8", "surrogatepass")) == nesting(value)
    assert loads(escaped.encode()) == value
    try:
        data = raw.encode()
    except UnicodeEncodeError:   # a surrogate written as UTF-8 bytes is not UTF-8
        with pytest.raises(JsonInputError, match="not valid UTF-8"):
            loads(raw.encode("utf-8", "surrogatepass"))
    else:
        assert loads(data) == value


@FUZZ
@given(st.integers(1, 3 * MAX_DEPTH), st.sampled_from(["[", '{"a":']), st.booleans())
def test_too_deep_is_refused_before_parsing(levels: int, opener: str, closed: bool) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * levels + "1" + (closer * levels if closed else "")
    if levels > MAX_DEPTH:
        with pytest.raises(JsonInputError, match="nested deeper than 64 levels"):
            loads(text)
    elif closed:
        assert nesting(loads(text)) == levels
    for big in (text * 2, "[" * 100_000):  # far deeper than the interpreter could recurse
        with pytest.raises(ValueError):
            loads(big)


def test_refusals_say_why() -> None:
    with pytest.raises(JsonInputError, match="NaN is not a JSON number"):
        loads(b'{"a": NaN}')
    with pytest.raises(JsonInputError, match=r"not valid UTF-8: invalid continuation byte at byte 9"):
        loads(b'{"a": "x\xed\xa0\x80"}')   # a surrogate encoded as bytes
    assert loads('["\\ud83d\\ude00"]') == ["\U0001f600"]
    assert find_bad_text({"a": ["ok", "\udc00"]}).path == ("a", 1)  # type: ignore[union-attr]
    assert str(find_bad_text({"a": {"b\x00": 1}})) == "text with a NUL character cannot be stored"


@FUZZ
@given(st.lists(st.binary(max_size=120) | json_ish | json_values.map(
    lambda v: json.dumps(v).encode()), max_size=8))
def test_stream_bodies_never_raise(bodies: list[bytes]) -> None:
    table, rejected = parse_bodies(bodies)
    items = sum(len(v) if isinstance(v, list) else 1 for v in map(loads_or_broken, bodies))
    assert table.num_rows + len({i for i, _ in rejected}) == items  # each accepted or named


def each_loaded(bodies: list[bytes]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for body in bodies:
        try:
            out.append(("value", loads(body)))
        except ValueError as exc:
            out.append((type(exc).__name__, str(exc)))
    return out


def many_loaded(bodies: list[bytes]) -> list[tuple[str, Any]]:
    values, errors = loads_many(bodies)
    return [(type(errors[i]).__name__, str(errors[i])) if i in errors else ("value", v)
            for i, v in enumerate(values)]


# pieces of JSON that are no value alone but join with a neighbour into one, or hold two
fragments = st.sampled_from([b'[{"a":1}', b'{"b":2}]', b'{"c":3},{"d":4}', b'{"a":"}"', b'"b":"{"}',
                             b'"x', b'y"', b"1,2", b"", b" ", b'{"e":"\\"}', b'{"f":"\\', b'"}',
                             b'{"g":1}\n', b"[" * 70 + b"]" * 70, b"12345678901234567890"])


@FUZZ
@given(st.lists(fragments | json_ish | json_values.map(lambda v: json.dumps(v).encode())
                | event_bodies, max_size=14))
def test_loads_many_is_loads_body_by_body(bodies: list[bytes]) -> None:
    """Read as one batch, each body gives what ``loads`` gives it alone, error text included."""
    assert many_loaded(bodies) == each_loaded(bodies)


def test_loads_many_keeps_bodies_apart() -> None:
    good = [json.dumps(dict(GOOD, id=f"e{i}")).encode() for i in range(6)]
    # together these three make an array of three values: a body may not close another's bracket
    tricky = [b'{"a":"}"', b'"b":"{"}', b"1,2"]
    for bodies in (good + tricky, tricky + good, [*good[:3], b'[{"a":1}', b'{"b":2}]', *good[3:]],
                   [*good, b'{"x":1}\n'], [*good, b'"\\ud800"']):
        assert many_loaded(bodies) == each_loaded(bodies)
    values, errors = loads_many([*good, b"1,2"])
    assert values[:6] == [dict(GOOD, id=f"e{i}") for i in range(6)] and list(errors) == [6]


def test_loads_many_body_by_body_at_the_depth_limit() -> None:
    """Bodies read one by one (no joined array): nesting of exactly ``MAX_DEPTH`` is read,
    one level more is refused, brackets inside strings count for nothing; with other
    bodies around, and many shallow bodies whose brackets add up past the limit."""
    good = [json.dumps(dict(GOOD, id=f"e{i}")).encode() for i in range(MAX_DEPTH + 5)]
    at = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    over = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    quoted = json.dumps({"s": "[{" * MAX_DEPTH}).encode()
    for bodies in (good, [*good, at], [at, *good], [*good[:3], over, *good[3:]], [quoted, *good],
                   [*good, quoted, at], [b"[]"] * (MAX_DEPTH + 2), [at] * 3, [over]):
        assert many_loaded(bodies) == each_loaded(bodies)
    assert many_loaded([at])[0] == ("value", loads(at))
    assert many_loaded([over])[0][0] == "JsonInputError"


def loads_or_broken(body: bytes) -> Any:
    try:
        return loads(body)
    except ValueError:
        return "broken"


event_fields = st.fixed_dictionaries({}, optional={
    "id": texts | st.integers(), "type": st.sampled_from(["app_crash", "a b", ""]) | texts,
    "ts": st.sampled_from(["2026-11-25T10:00:00Z", "0001-01-01T00:00:00+01:00", "2026-02-30T00:00:00Z",
                           "1700000000"]) | st.integers(), "customer_id": texts | st.none(),
    "tenant_id": st.sampled_from(["default", "acme", "a b"]) | texts, "attributes": json_values})


@FUZZ
@given(st.lists(event_fields | json_values, max_size=6))
def test_every_item_is_accepted_or_named(items: list[Any]) -> None:
    table, rejected = validate_events(items)
    assert table.num_rows + len(rejected) == len(items)
    assert all(reason for _, reason in rejected)
    for row in table.to_pylist():   # what is accepted can be written as UTF-8 anywhere
        for value in row.values():
            if isinstance(value, str):
                value.encode("utf-8")


@pytest.fixture
def ingest_api(tmp_path: Path) -> TestClient:
    store = open_store(f"sqlite:///{tmp_path / 'ceap.db'}")
    stream = EmbeddedStream.from_dict({"type": "embedded", "stream": "ingest"},
                                      PluginContext(base_dir=tmp_path, store=store))
    return TestClient(create_app(store, auth=False, ingest=stream), raise_server_exceptions=False)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200) | json_ish | st.lists(event_fields, max_size=4).map(
    lambda items: json.dumps(items).encode()))
def test_ingest_answers_4xx_or_202_to_any_body(ingest_api: TestClient, body: bytes) -> None:
    for path in ("/v1/events", "/v1/events/eventbridge"):
        answer = ingest_api.post(path, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code in (202, 400, 403, 422), (path, answer.status_code, answer.text)


def test_json_lines_number_every_line(tmp_path: Path) -> None:
    data = (b'\xef\xbb\xbf{"a": 1}\r\n\n  \n[1, 2]\n' + b"[" * 100 + b"\n{\xff}\n"
            + '"x\u2028y"\n'.encode())   # U+2028 is no line break in JSON Lines
    values, broken = json_lines(data)
    assert values == [(1, {"a": 1}), (4, [1, 2]), (7, "x\u2028y")]
    assert broken == [(5, "not JSON: nested deeper than 64 levels"),
                      (6, "not UTF-8: invalid start byte at byte 2 of the line")]


# -- ceap publish --------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CEAP_STORE", raising=False)
    (tmp_path / "programs").mkdir()
    return tmp_path


def queued(project: Path) -> list[str]:
    store = open_store(f"sqlite:///{project / '.ceap' / 'ceap.db'}")
    stream = EmbeddedStream.from_dict({"type": "embedded", "stream": "events"},
                                      PluginContext(base_dir=project, store=store))
    try:
        return [json.loads(m.body)["id"] for m in stream.poll(1000, 0)]
    finally:
        store.close()


@pytest.mark.parametrize(("line", "reason"), [
    (b"[" * 10_000 + b"]" * 10_000, "not JSON: nested deeper than 64 levels"),
    (b'{"id": "e\xff"}', "not UTF-8: invalid start byte at byte 10 of the line"),
    (b'{"id": "e2", NaN}', "not JSON: Expecting property name enclosed in double quotes"),
])
def test_publish_refuses_a_file_with_a_broken_line(project: Path, line: bytes, reason: str) -> None:
    good = [json.dumps({**GOOD, "id": f"e{i}"}).encode() for i in range(3)]
    (project / "events.jsonl").write_bytes(b"\n".join([good[0], b"", good[1], line, good[2]]))
    result = runner.invoke(app, ["publish", "events.jsonl"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"events.jsonl:4: {reason}" in result.stderr   # the file's own line number
    assert "nothing published" in result.stderr and queued(project) == []


def test_publish_sends_the_good_events_and_names_the_bad_ones(project: Path) -> None:
    lines = [json.dumps(GOOD), "", json.dumps({**GOOD, "id": "e2", "customer_id": "\udc00"}),
             json.dumps({**GOOD, "id": "e3", "ts": 0}), json.dumps({**GOOD, "id": "e4"})]
    (project / "events.jsonl").write_text("\n".join(lines))
    result = runner.invoke(app, ["publish", "events.jsonl"])
    assert result.exit_code == 1, result.output
    assert "events.jsonl:3: customer_id: text with a lone surrogate is not valid Unicode" in result.stderr
    assert "events.jsonl:4: ts: " in result.stderr
    assert "published 2 event(s)" in result.stdout and queued(project) == ["e1", "e4"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.lists(json_ish | st.binary(max_size=40) | event_fields.map(
    lambda e: json.dumps(e).encode()), max_size=5).map(b"\n".join))
def test_publish_exits_0_1_or_2_whatever_the_file(project: Path, data: bytes) -> None:
    (project / "fuzz.jsonl").write_bytes(data)
    result = runner.invoke(app, ["publish", "fuzz.jsonl", "--stream", "fuzz"])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_broker_keys_of_any_body() -> None:
    from ceap.connectors.streams_common import body_keys

    assert body_keys(json.dumps(GOOD).encode()) == ("e1", "C1")
    for body in (b"[" * 10_000, b"\xff", b'{"id": NaN}'):
        assert body_keys(body) == (None, None)



@FUZZ
@given(st.one_of(json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8",
                                                                                   "surrogatepass")),
                 json_values.map(lambda v: json.dumps(v).encode()),
                 st.integers(-(10**40), 10**40).map(lambda n: f'{{"n":{n}}}'.encode()),
                 st.sampled_from([b'{"a":1e400}', b'{"a":-1e400}', b'\xef\xbb\xbf{"a":1}', b'{"a":"\\ud800"}',
                                  b'{"a":0.1e-400}', b'{"a":1.7976931348623157e308}', b" [1, 2.50] ",
                                  b'{"a":NaN}', b"[" * 70 + b"]" * 70]),
                 json_ish))
def test_loads_reads_what_json_reads(data: bytes) -> None:
    """The orjson fast path gives what ``json`` alone gives (a big integer stays an integer,
    a huge number is infinity, a lone surrogate escape is kept), or refuses with its reason."""
    try:
        expected = json_loads(data)
    except ValueError as exc:
        with pytest.raises(ValueError) as got:
            loads(data)
        assert str(got.value) == str(exc)
        return
    got = loads(data)
    assert json.dumps(got) == json.dumps(expected)
    assert type(got) is type(expected)

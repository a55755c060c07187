"""The plugin conformance suite: what every connector, filter, scorer, channel and
store must do, whatever it talks to. Call it from your plugin's tests::

    from ceap.testing import check_connector, check_registration

    def test_my_source(tmp_path):
        check_registration("connector", "mysource", MySource)
        check_connector(MySource, {"type": "mysource", "path": "rows.bin"},
                        PluginContext(base_dir=tmp_path))

Every check raises AssertionError saying which plugin broke which rule.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, get_args

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from ceap.channels.base import Message, SendResult, SendStatus
from ceap.errors import PluginError
from ceap.model import Candidate, CandidateQuery, InboxItem, RunRecord, utcnow
from ceap.plugin import PluginConfig, PluginContext
from ceap.registry import Registry, check_plugin
from ceap.sqlexpr import evaluate, sandboxed_connection
from ceap.store.base import Store
from ceap.store.schema import CANDIDATE_COLUMNS, JSON_COLUMNS, QUARANTINE_SCHEMA, TIME_COLUMNS
from ceap.testing.doubles import make_candidates

_UNKNOWN_FIELD = "ceap_conformance_unknown_field"
_EXTRA_COLUMN = "__ceap_conformance_extra__"
_SEND_OK = ("sent", "delivered")


def _fail(where: str, message: str) -> NoReturn:
    raise AssertionError(f"{where}: {message}")


def _name(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"


# -- registration and config -----------------------------------------------------


def check_registration(kind: str, name: str, cls: type[Any]) -> None:
    """``cls`` is accepted as the ``kind`` plugin ``name``, as its entry point would be."""
    try:
        check_plugin(kind, name, cls)
        registry = Registry()
        registry.register(kind, name, cls)
    except PluginError as exc:
        raise AssertionError(f"registration refused: {exc}") from exc
    if registry.get(kind, name) is not cls:
        _fail(f"{kind} {name!r}", "the registry does not return the registered class")


def check_config(cls: type[Any], config: dict[str, Any], where: str | None = None) -> PluginConfig:
    """The config validates, rejects an unknown field and survives a dump and reload."""
    where = where or _name(cls)
    model = cls.config_model
    try:
        parsed = model.model_validate(config)
    except ValidationError as exc:
        _fail(where, f"the sample config does not validate: {exc}")
    try:
        model.model_validate({**config, _UNKNOWN_FIELD: 1})
    except ValidationError:
        pass
    else:
        _fail(where, f"config model {model.__name__} accepts an unknown field; set extra='forbid'")
    for mode in ("python", "json"):
        dumped = parsed.model_dump(mode=mode)
        again = model.model_validate(dumped)
        if again != parsed:
            _fail(where, f"config does not survive model_dump(mode={mode!r}) and "
                         f"model_validate: {parsed!r} became {again!r}")
    if model.model_validate_json(parsed.model_dump_json()) != parsed:
        _fail(where, "config does not survive a JSON round trip")
    return parsed


def _build(cls: type[Any], config: dict[str, Any], context: PluginContext | None, where: str) -> Any:
    parsed = check_config(cls, config, where)
    plugin = cls.from_dict(config, context)
    if not isinstance(plugin, cls):
        _fail(where, f"from_dict returned {type(plugin).__name__}, not {cls.__name__}")
    if plugin.config != parsed:
        _fail(where, "the plugin's config differs from the validated config")
    return plugin


def _permutation(n: int) -> np.ndarray:
    perm = np.random.default_rng(20240501).permutation(n)
    if n > 1 and (perm == np.arange(n)).all():
        perm = np.roll(perm, 1)
    return perm


def _with_extra_column(table: pa.Table) -> pa.Table:
    values = pa.array(np.arange(table.num_rows, dtype=np.int64)[::-1].copy())
    return table.append_column(_EXTRA_COLUMN, values)


# -- connectors --------------------------------------------------------------------


def _read_all(source: Any, schema: pa.Schema, limit: int, where: str) -> pa.Table:
    batches = list(source.read())
    for i, batch in enumerate(batches):
        if not isinstance(batch, pa.RecordBatch):
            _fail(where, f"read() yielded a {type(batch).__name__}, not a pyarrow.RecordBatch")
        if not batch.schema.equals(schema, check_metadata=False):
            _fail(where, f"batch {i} has schema\n{batch.schema}\nbut schema() said\n{schema}")
        if batch.num_rows > limit:
            _fail(where, f"batch {i} has {batch.num_rows} rows, more than batch_rows={limit}")
    return pa.Table.from_batches(batches, schema=schema)


def check_connector(cls: type[Any], config: dict[str, Any], context: PluginContext | None = None) -> None:
    """``config`` must point at sample data with at least two rows.

    Checks: schema() is the schema of every batch; batches respect batch_rows
    (also a small one, without changing the data); reading twice gives the same rows.
    """
    where = f"connector {_name(cls)}"
    source = _build(cls, config, context, where)
    described = source.describe()
    if not isinstance(described, str) or not described:
        _fail(where, f"describe() must return a non-empty str, got {described!r}")
    schema = source.schema()
    if not isinstance(schema, pa.Schema):
        _fail(where, f"schema() returned {type(schema).__name__}, not a pyarrow.Schema")
    table = _read_all(source, schema, source.config.batch_rows, where)
    if table.num_rows < 2:
        _fail(where, f"the sample data has {table.num_rows} row(s); give at least two")
    if not _read_all(source, schema, source.config.batch_rows, where).equals(table):
        _fail(where, "reading twice gave different data")
    small = max(1, table.num_rows // 3)
    chunked = _build(cls, {**config, "batch_rows": small}, context, where)
    if not _read_all(chunked, schema, small, where).equals(table):
        _fail(where, f"with batch_rows={small} the rows differ from a read with the default")
    estimate = source.estimated_rows()
    if estimate is not None and (not isinstance(estimate, int) or estimate < 0):
        _fail(where, f"estimated_rows() must be None or a count, got {estimate!r}")


# -- filters -----------------------------------------------------------------------


def _mask(flt: Any, table: pa.Table, where: str) -> list[bool]:
    mask = flt.mask(table)
    if not isinstance(mask, pa.Array | pa.ChunkedArray):
        _fail(where, f"mask() returned {type(mask).__name__}, not a pyarrow array")
    if not pa.types.is_boolean(mask.type):
        _fail(where, f"mask() returned type {mask.type}, not bool")
    if len(mask) != table.num_rows:
        _fail(where, f"mask() has {len(mask)} values for {table.num_rows} rows")
    return [bool(v) for v in mask.to_pylist()]  # a null drops the row


def check_filter(cls: type[Any], config: dict[str, Any], context: PluginContext | None,
                 sample: pa.Table) -> None:
    """``sample`` should hold rows the filter keeps and rows it drops.

    Checks: one boolean per row; same mask twice; empty in, empty out; a
    permutation of the rows permutes the mask; unrelated columns change
    nothing; ``columns()`` names every column read; ``sql()`` agrees with ``mask()``.
    """
    where = f"filter {_name(cls)}"
    flt = _build(cls, config, context, where)
    if flt.id != flt.config.id:
        _fail(where, f"id {flt.id!r} is not the config's id {flt.config.id!r}")
    if sample.num_rows < 2:
        _fail(where, "give a sample of at least two rows")
    mask = _mask(flt, sample, where)
    if _mask(flt, sample, where) != mask:
        _fail(where, "two calls on the same rows gave different masks")
    if _mask(flt, sample.slice(0, 0), where):
        _fail(where, "an empty table must give an empty mask")
    perm = _permutation(sample.num_rows)
    if _mask(flt, sample.take(perm), where) != [mask[i] for i in perm]:
        _fail(where, "permuting the rows did not permute the mask the same way")
    if _mask(flt, _with_extra_column(sample), where) != mask:
        _fail(where, "an unrelated extra column changed the mask")
    columns = flt.columns()
    if columns is not None:
        missing = set(columns) - set(sample.column_names)
        if missing:
            _fail(where, f"columns() names {sorted(missing)}, which the sample lacks")
        if _mask(flt, sample.select(sorted(columns)), where) != mask:
            _fail(where, f"columns() says {sorted(columns)} but the mask changes without the others")
    sql = flt.sql()
    if sql is not None:
        with sandboxed_connection() as con:
            kept = evaluate(con, sample, f"COALESCE(({sql}), false) AS keep").column("keep")
        if [bool(v) for v in kept.to_pylist()] != mask:
            _fail(where, f"sql() {sql!r} keeps different rows than mask()")


# -- scorers -----------------------------------------------------------------------


def _score(scorer: Any, table: pa.Table, where: str) -> np.ndarray:
    scores = scorer.score(table)
    if not isinstance(scores, np.ndarray):
        _fail(where, f"score() returned {type(scores).__name__}, not a numpy array")
    if scores.dtype != np.float64:
        _fail(where, f"score() returned dtype {scores.dtype}, not float64")
    if scores.shape != (table.num_rows,):
        _fail(where, f"score() returned shape {scores.shape} for {table.num_rows} rows")
    return scores


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True))


def check_scorer(cls: type[Any], config: dict[str, Any], context: PluginContext | None,
                 sample: pa.Table) -> None:
    """``sample`` holds at least two rows with every feature the scorer reads.

    Checks: one float64 per row; deterministic; order-preserving; a row scores
    the same alone as in a batch; empty in, empty out; unrelated columns change
    nothing and ``features()`` are all it reads; a stable, non-empty model id.
    """
    where = f"scorer {_name(cls)}"
    scorer = _build(cls, config, context, where)
    model = scorer.model_id()
    if not isinstance(model, str) or not model or scorer.model_id() != model:
        _fail(where, f"model_id() must be a stable non-empty str, got {model!r}")
    features = scorer.features()
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        _fail(where, f"features() must be a list of column names, got {features!r}")
    missing = set(features) - set(sample.column_names)
    if missing:
        _fail(where, f"the sample lacks feature column(s) {sorted(missing)}")
    if sample.num_rows < 2:
        _fail(where, "give a sample of at least two rows")
    scores = _score(scorer, sample, where)
    if not np.array_equal(_score(scorer, sample, where), scores, equal_nan=True):
        _fail(where, "two calls on the same rows gave different scores")
    if _score(scorer, sample.slice(0, 0), where).size:
        _fail(where, "an empty table must give no scores")
    perm = _permutation(sample.num_rows)
    if not _same(_score(scorer, sample.take(perm), where), scores[perm]):
        _fail(where, "permuting the rows did not permute the scores the same way")
    for i in range(min(3, sample.num_rows)):
        if not _same(_score(scorer, sample.slice(i, 1), where), scores[i:i + 1]):
            _fail(where, f"row {i} scores differently alone than in a batch")
    if not _same(_score(scorer, _with_extra_column(sample), where), scores):
        _fail(where, "an unrelated extra column changed the scores")
    if features and not _same(_score(scorer, sample.select(features), where), scores):
        _fail(where, f"features() says {features} but the scores change without the other columns")


# -- channels ----------------------------------------------------------------------


def _send(channel: Any, messages: Sequence[Message], where: str) -> list[str]:
    results = channel.send(list(messages))
    if not isinstance(results, list) or len(results) != len(messages):
        _fail(where, f"send() of {len(messages)} message(s) returned {results!r}")
    valid = get_args(SendStatus)
    for m, r in zip(messages, results, strict=True):
        if not isinstance(r, SendResult):
            _fail(where, f"send() returned a {type(r).__name__}, not a SendResult")
        if r.idempotency_key != m.idempotency_key:
            _fail(where, f"result for key {r.idempotency_key!r} where {m.idempotency_key!r} "
                         "was expected: results must follow the order of the messages")
        if r.status not in valid:
            _fail(where, f"status {r.status!r} is not one of {valid}")
    return [r.status if r.status != "failed" else f"failed: {r.error}" for r in results]


def check_channel(cls: type[Any], config: dict[str, Any], context: PluginContext | None,
                  messages: list[Message]) -> None:
    """``messages`` have keys the channel has never seen; two more derived from the
    first are sent too: the first message under a new key, and the first message in
    another tenant (its tenant id plus ``-conformance-other``).

    Checks: one result per message, in order; valid statuses; the same keys
    sent again (also through a new instance) are duplicates, not deliveries;
    a key repeated within one batch is delivered once; keys are per tenant;
    an empty batch is fine.

    Sends, in order: ``[]``; ``messages``; ``messages`` again; [first, new key,
    new key again]; [first in the other tenant]; then ``messages`` through a
    second instance. A channel that passes delivers ``len(messages) + 2``
    messages (a provider stand-in sees that many calls from a channel that calls
    it once per delivery), to the messages' tenants and one more; everything
    else must come back ``duplicate``.
    """
    where = f"channel {_name(cls)}"
    if not messages:
        _fail(where, "give at least one message")
    keys = [(m.tenant_id, m.idempotency_key) for m in messages]
    if len(set(keys)) != len(keys):
        _fail(where, "the sample messages must have distinct idempotency keys")
    channel = _build(cls, config, context, where)
    try:
        if channel.send([]) != []:
            _fail(where, "send([]) must return []")
        first = _send(channel, messages, where)
        if any(s not in _SEND_OK for s in first):
            _fail(where, f"the first send of new keys gave {first}; expected sent or delivered")
        again = _send(channel, messages, where)
        if any(s != "duplicate" for s in again):
            _fail(where, f"sending the same keys again gave {again}; expected all 'duplicate'")
        head = messages[0]
        fresh = replace(head, idempotency_key=f"{head.idempotency_key}-conformance-{uuid.uuid4().hex[:8]}")
        mixed = _send(channel, [head, fresh, fresh], where)
        if mixed[0] != "duplicate" or mixed[1] not in _SEND_OK or mixed[2] != "duplicate":
            _fail(where, f"a batch of [known key, new key, new key again] gave {mixed}; "
                         "expected [duplicate, sent/delivered, duplicate]")
        other = replace(head, tenant_id=f"{head.tenant_id}-conformance-other")
        if _send(channel, [other], where)[0] not in _SEND_OK:
            _fail(where, "a known key in another tenant was not delivered: keys are per tenant")
    finally:
        channel.close()
    second = cls.from_dict(config, context)
    try:
        later = _send(second, messages, where)
        if any(s != "duplicate" for s in later):
            _fail(where, f"a new instance sent known keys again ({later}): the keys must "
                         "outlive the instance")
    finally:
        second.close()


# -- stores --------------------------------------------------------------------------


def check_store(cls: type[Any], config: dict[str, Any], context: PluginContext | None = None) -> None:
    """``config`` must point at an empty database (or schema) the check may write to.

    Checks: migrate is idempotent and keeps data; every candidate field round
    trips; dedup per (tenant, dedup_key); lookups by customer, program, channel
    and status in (priority, score) order; write_run is atomic; runs and
    quarantine; sweep_expired removes only expired rows; inbox add/list/mark
    read with idempotency; tenants see only their own data.
    """
    where = f"store {_name(cls)}"
    store = _build(cls, config, context, where)
    if not isinstance(store, Store):
        _fail(where, "a store must subclass ceap.store.base.Store")
    prefix = f"conf-{uuid.uuid4().hex[:8]}"
    try:
        store.migrate()
        store.migrate()
        _store_sweep(store, f"{prefix}-sweep", where)  # first: it counts every expired row
        kept = _store_round_trip(store, f"{prefix}-round", where)
        _store_dedup(store, f"{prefix}-dedup", where)
        _store_lookups(store, f"{prefix}-lookup", where)
        _store_atomic(store, f"{prefix}-atomic", where)
        _store_runs(store, f"{prefix}-runs", where)
        _store_inbox(store, f"{prefix}-inbox", where)
        _store_tenants(store, f"{prefix}-a", f"{prefix}-b", where)
        store.migrate()
        if _all(store, f"{prefix}-round") != kept:
            _fail(where, "migrate() on a store with data changed the candidates")
    finally:
        store.close()


def _run(tenant: str, run_id: str, program: str = "conformance", **fields: Any) -> RunRecord:
    return RunRecord(run_id, tenant, program, fields.pop("status", "succeeded"),
                     fields.pop("started_at", utcnow()), **fields)


def _all(store: Store, tenant: str, **query: Any) -> list[Candidate]:
    return store.candidates(CandidateQuery(tenant_id=tenant, include_expired=True, limit=1000, **query))


def _keys(candidates: list[Candidate]) -> list[str]:
    return [c.dedup_key for c in candidates]


def _expect_write(result: Any, inserted: int, duplicates: int, quarantined: int, what: str,
                  where: str) -> None:
    got = (result.inserted, result.duplicates, result.quarantined)
    if got != (inserted, duplicates, quarantined):
        _fail(where, f"{what}: write_run returned (inserted, duplicates, quarantined) = {got}, "
                     f"expected {(inserted, duplicates, quarantined)}")


def _is_utc(value: Any) -> bool:
    return isinstance(value, datetime) and value.utcoffset() == timedelta(0)


def _store_round_trip(store: Store, tenant: str, where: str) -> list[Candidate]:
    table = make_candidates(
        3, tenant_id=tenant, run_id=f"{tenant}-r1", priority=lambda i: i, holdout=lambda i: i >= 1,
        arm=lambda i: ["treatment", "holdout", "global_control"][i],
        variant=lambda i: None if i == 0 else f"v{i}",
        features=lambda i: None if i == 1 else {"spend": 12.5 * i, "orders": i},
        subject_id=lambda i: None if i == 0 else f"s{i}", template=lambda i: None if i == 0 else "t",
        reasons=lambda i: None if i == 0 else {"why": [i, "ünïcode"]},
        context=lambda i: {"region": ["eu", "us", "apac"][i]},
        payload=lambda i: {"nested": {"list": [1, 2.5, None, True]}, "i": i, "s": "✓"},
        channels=lambda i: ["inapp", "email"][: i + 1], score=lambda i: 0.125 * (i + 1),
    )
    quarantine = pa.table({"tenant_id": [tenant] * 2, "run_id": [f"{tenant}-r1"] * 2,
                           "program": ["conformance"] * 2, "row": ['{"a": 1}', '{"a": "x"}'],
                           "reason": ["spend: not a float", "missing customer_id"]},
                          schema=QUARANTINE_SCHEMA)
    result = store.write_run(_run(tenant, f"{tenant}-r1"), table, quarantine)
    _expect_write(result, 3, 0, 2, "a first write of 3 candidates and 2 quarantined rows", where)
    got = {c.dedup_key: c for c in _all(store, tenant)}
    if len(got) != 3:
        _fail(where, f"wrote 3 candidates, read back {len(got)}")
    ids = [c.id for c in got.values()]
    if not all(isinstance(i, int) for i in ids) or len(set(ids)) != 3:
        _fail(where, f"candidate ids must be distinct ints, got {ids}")
    for row in table.to_pylist():
        candidate = got[row["dedup_key"]]
        for name in CANDIDATE_COLUMNS:
            expected, actual = row[name], getattr(candidate, name)
            if name in JSON_COLUMNS and expected is not None:
                expected = json.loads(expected)
            if name in TIME_COLUMNS and not _is_utc(actual):
                _fail(where, f"candidate {name} must be a timezone-aware UTC datetime, got {actual!r}")
            if name == "holdout" and not isinstance(actual, bool):
                _fail(where, f"candidate holdout must be a bool, got {actual!r}")
            if actual != expected:
                _fail(where, f"candidate {row['dedup_key']} field {name}: wrote {expected!r}, "
                             f"read back {actual!r}")
    bad = store.quarantined(tenant, f"{tenant}-r1")
    expected_bad = [{"row": r["row"], "reason": r["reason"]} for r in quarantine.to_pylist()]
    if bad != expected_bad:
        _fail(where, f"quarantined() returned {bad}, expected {expected_bad}")
    return _all(store, tenant)


def _store_dedup(store: Store, tenant: str, where: str) -> None:
    first = make_candidates(3, tenant_id=tenant, run_id="r1", score=0.5)
    _expect_write(store.write_run(_run(tenant, f"{tenant}-1"), first), 3, 0, 0, "first write", where)
    second = make_candidates(3, tenant_id=tenant, run_id="r2", score=0.9,
                             dedup_key=lambda i: f"dedup-{i + 1}")
    _expect_write(store.write_run(_run(tenant, f"{tenant}-2"), second), 1, 2, 0,
                  "a write of 2 known dedup keys and 1 new", where)
    got = {c.dedup_key: (c.run_id, c.score) for c in _all(store, tenant)}
    expected = {"dedup-0": ("r1", 0.5), "dedup-1": ("r1", 0.5), "dedup-2": ("r1", 0.5),
                "dedup-3": ("r2", 0.9)}
    if got != expected:
        _fail(where, f"after a duplicate write the candidates are {got}; a duplicate must change "
                     f"nothing (expected {expected})")
    twice = make_candidates(2, tenant_id=tenant, dedup_key="same-key-twice")
    _expect_write(store.write_run(_run(tenant, f"{tenant}-3"), twice), 1, 1, 0,
                  "a write holding one dedup key twice", where)
    other = f"{tenant}-other"
    _expect_write(store.write_run(_run(other, f"{other}-1"), first.set_column(
        0, "tenant_id", pa.array([other] * 3))), 3, 0, 0,
        "the same dedup keys in another tenant (dedup is per tenant)", where)


def _store_lookups(store: Store, tenant: str, where: str) -> None:
    rows = [  # (key, customer, program, channels, status, priority, score)
        ("a1", "alice", "p1", ["inapp", "email"], "pending", 1, 0.5),
        ("a2", "alice", "p2", ["email"], "held_out", 2, 0.1),
        ("a3", "alice", "p1", ["inapp"], "pending", 1, 0.9),
        ("b1", "bob", "p1", ["push"], "pending", 0, 1.0),
    ]
    names = ["dedup_key", "customer_id", "program", "channels", "status", "priority", "score"]
    columns: dict[str, Any] = {name: (lambda i, j=j: rows[i][j]) for j, name in enumerate(names)}
    table = make_candidates(len(rows), tenant_id=tenant, **columns)
    store.write_run(_run(tenant, f"{tenant}-1"), table)
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"customer_id": "alice"}, ["a2", "a3", "a1"]),
        ({"program": "p1"}, ["a3", "a1", "b1"]),
        ({"channel": "inapp"}, ["a3", "a1"]),
        ({"channel": "email"}, ["a2", "a1"]),
        ({"channel": "in"}, []),
        ({"status": "held_out"}, ["a2"]),
        ({"customer_id": "alice", "program": "p1", "channel": "inapp"}, ["a3", "a1"]),
        ({"customer_id": "carol"}, []),
        ({"customer_id": "alice", "limit": 1}, ["a2"]),
    ]
    for query, expected in cases:
        got = _keys(store.candidates(CandidateQuery(tenant_id=tenant, **query)))
        if got != expected:
            _fail(where, f"candidates({query}) gave {got}, expected {expected} "
                         "(ordered by priority, then score, highest first)")


def _store_atomic(store: Store, tenant: str, where: str) -> None:
    good = make_candidates(2, tenant_id=tenant, dedup_key=lambda i: f"good-{i}")
    store.write_run(_run(tenant, f"{tenant}-good"), good)
    before = _keys(_all(store, tenant))
    null_last = make_candidates(3, tenant_id=tenant, dedup_key=lambda i: f"bad-{i}",
                                customer_id=lambda i: None if i == 2 else f"c{i}")
    bad_quarantine = pa.table({"tenant_id": [tenant] * 2, "run_id": [f"{tenant}-q"] * 2,
                               "program": ["conformance"] * 2, "row": ["{}", "{}"],
                               "reason": ["fine", None]}, schema=QUARANTINE_SCHEMA)
    attempts = [
        (f"{tenant}-null", null_last, None, "a candidate with a null customer_id as its last row"),
        (f"{tenant}-q", make_candidates(3, tenant_id=tenant, dedup_key=lambda i: f"ok-{i}"),
         bad_quarantine, "valid candidates followed by a quarantined row with a null reason"),
    ]
    for run_id, candidates, quarantine, what in attempts:
        try:
            store.write_run(_run(tenant, run_id), candidates, quarantine)
        except Exception:
            pass
        else:
            _fail(where, f"write_run accepted {what}; it must fail")
        if _keys(_all(store, tenant)) != before:
            _fail(where, f"a failed write_run ({what}) left candidates behind: write_run must be atomic")
        if any(r.run_id == run_id for r in store.runs(tenant, limit=100)):
            _fail(where, f"a failed write_run ({what}) left its run record behind")
        if store.quarantined(tenant, run_id):
            _fail(where, f"a failed write_run ({what}) left quarantined rows behind")
    after = make_candidates(1, tenant_id=tenant, dedup_key="after-failure")
    _expect_write(store.write_run(_run(tenant, f"{tenant}-after"), after), 1, 0, 0,
                  "a write after failed writes (the store must still work)", where)


def _store_runs(store: Store, tenant: str, where: str) -> None:
    t0, hour = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), timedelta(hours=1)
    store.write_run(_run(tenant, f"{tenant}-ok", "p1", started_at=t0, finished_at=t0 + timedelta(seconds=5),
                         funnel={"read": 10, "filters": {"f1": 3}}),
                    make_candidates(1, tenant_id=tenant))
    store.record_run(_run(tenant, f"{tenant}-failed", "p1", status="failed", started_at=t0 + hour,
                          error="source 'x': boom ✗"))
    store.record_run(_run(tenant, f"{tenant}-skipped", "p2", status="skipped", started_at=t0 + 2 * hour,
                          funnel={"skipped": "program is paused"}))
    runs = store.runs(tenant)
    if [r.run_id for r in runs] != [f"{tenant}-{k}" for k in ("skipped", "failed", "ok")]:
        _fail(where, f"runs() gave {[r.run_id for r in runs]}; expected newest first")
    ok, failed, skipped = runs[2], runs[1], runs[0]
    if (ok.status, ok.program, ok.started_at) != ("succeeded", "p1", t0) or not _is_utc(ok.finished_at):
        _fail(where, f"run read back as {ok}")
    if ok.funnel.get("read") != 10 or ok.funnel.get("filters") != {"f1": 3}:
        _fail(where, f"run funnel read back as {ok.funnel}")
    if (failed.status, failed.error) != ("failed", "source 'x': boom ✗"):
        _fail(where, f"failed run read back as {failed}")
    if skipped.funnel != {"skipped": "program is paused"}:
        _fail(where, f"skipped run's funnel read back as {skipped.funnel}")
    if [r.run_id for r in store.runs(tenant, program="p1")] != [f"{tenant}-failed", f"{tenant}-ok"]:
        _fail(where, "runs(program=...) must return only that program's runs")
    if [r.run_id for r in store.runs(tenant, limit=1)] != [f"{tenant}-skipped"]:
        _fail(where, "runs(limit=1) must return only the newest run")
    store.record_run(_run(tenant, f"{tenant}-failed", "p1", status="failed", started_at=t0 + hour,
                          error="second attempt"))
    again = [r for r in store.runs(tenant) if r.run_id == f"{tenant}-failed"]
    if len(again) != 1 or again[0].error != "second attempt":
        _fail(where, "recording a run again must update it, not add a second record")


def _store_sweep(store: Store, tenant: str, where: str) -> None:
    now = utcnow()
    table = make_candidates(4, tenant_id=tenant, now=now - timedelta(days=2), expires_at=lambda i: (
        now - timedelta(hours=1) if i % 2 else now + timedelta(days=1)))
    store.write_run(_run(tenant, f"{tenant}-1"), table)
    measured = make_candidates(2, tenant_id=tenant, program="measured", now=now - timedelta(days=2),
                               expires_at=now - timedelta(hours=1), holdout=lambda i: i == 1,
                               dedup_key=lambda i: f"measured-{i}")
    store.write_run(_run(tenant, f"{tenant}-2", program="measured"), measured)
    live = _keys(store.candidates(CandidateQuery(tenant_id=tenant, program="conformance")))
    if sorted(live) != ["dedup-0", "dedup-2"]:
        _fail(where, f"candidates() without include_expired gave {live}; expected the unexpired only")
    if len(_all(store, tenant, program="conformance")) != 4:
        _fail(where, "candidates(include_expired=True) must return expired candidates too")
    removed = store.sweep_expired(now)
    if removed != 2:
        _fail(where, f"sweep_expired removed {removed} candidates, expected the 2 expired")
    if sorted(_keys(_all(store, tenant, program="conformance"))) != ["dedup-0", "dedup-2"]:
        _fail(where, "sweep_expired removed unexpired candidates")
    if sorted(_keys(_all(store, tenant, program="measured"))) != ["measured-0", "measured-1"]:
        _fail(where, "sweep_expired must keep a program's candidates while it has held-out ones "
                     "(treated and control are compared in the uplift report)")
    if store.sweep_expired(now) != 0:
        _fail(where, "a second sweep_expired removed more")


def _inbox(tenant: str, customer: str, key: str, **fields: Any) -> InboxItem:
    return InboxItem(tenant_id=tenant, customer_id=customer, idempotency_key=key,
                     program=fields.get("program", "conformance"), title=f"title {key}",
                     body=f"body {key} ✓", payload={"key": key, "n": [1, 2]},
                     candidate_id=fields.get("candidate_id", 7))


def _store_inbox(store: Store, tenant: str, where: str) -> None:
    if store.inbox_add([]) != []:
        _fail(where, "inbox_add([]) must return []")
    added = store.inbox_add([_inbox(tenant, "alice", k) for k in ("k1", "k2", "k3")]
                            + [_inbox(tenant, "bob", "k4")])
    if added != [True] * 4:
        _fail(where, f"inbox_add of 4 new keys returned {added}")
    added = store.inbox_add([_inbox(tenant, "alice", "k1"), _inbox(tenant, "alice", "k5"),
                             _inbox(tenant, "alice", "k5")])
    if added != [False, True, False]:
        _fail(where, f"inbox_add of [known key, new key, new key again] returned {added}; "
                     "expected [False, True, False]")
    items = store.inbox_list(tenant, "alice")
    if [i.idempotency_key for i in items] != ["k5", "k3", "k2", "k1"]:
        _fail(where, f"inbox_list gave {[i.idempotency_key for i in items]}; expected newest first")
    first = items[-1]
    if (first.tenant_id, first.customer_id, first.program, first.title, first.body, first.payload,
            first.candidate_id) != (tenant, "alice", "conformance", "title k1", "body k1 ✓",
                                    {"key": "k1", "n": [1, 2]}, 7):
        _fail(where, f"inbox item read back as {first}")
    if not isinstance(first.id, int) or not _is_utc(first.created_at) or first.read_at is not None:
        _fail(where, f"a new inbox item needs an int id, a UTC created_at and no read_at: {first}")
    ids = {i.idempotency_key: i.id for i in items if i.id is not None}
    if store.inbox_mark_read(tenant, "bob", [ids["k1"]]) != 0:
        _fail(where, "inbox_mark_read marked another customer's message")
    if store.inbox_mark_read(tenant, "alice", []) != 0:
        _fail(where, "inbox_mark_read([]) must mark nothing")
    if store.inbox_mark_read(tenant, "alice", [ids["k1"], ids["k2"]]) != 2:
        _fail(where, "inbox_mark_read of 2 unread messages must return 2")
    if store.inbox_mark_read(tenant, "alice", [ids["k1"], ids["k2"]]) != 0:
        _fail(where, "marking read messages read again must return 0")
    unread = [i.idempotency_key for i in store.inbox_list(tenant, "alice", unread_only=True)]
    if unread != ["k5", "k3"]:
        _fail(where, f"inbox_list(unread_only=True) gave {unread}, expected ['k5', 'k3']")
    read = [i for i in store.inbox_list(tenant, "alice") if i.idempotency_key == "k1"]
    if not _is_utc(read[0].read_at):
        _fail(where, f"a read message needs a UTC read_at, got {read[0].read_at!r}")
    if store.inbox_add([_inbox(f"{tenant}-other", "alice", "k1")]) != [True]:
        _fail(where, "a known idempotency key in another tenant must be added: keys are per tenant")


def _store_tenants(store: Store, tenant: str, other: str, where: str) -> None:
    store.write_run(_run(tenant, f"{tenant}-1"), make_candidates(2, tenant_id=tenant, customer_id="alice"),
                    pa.table({"tenant_id": [tenant], "run_id": [f"{tenant}-1"], "program": ["p"],
                              "row": ["{}"], "reason": ["bad"]}, schema=QUARANTINE_SCHEMA))
    store.inbox_add([_inbox(tenant, "alice", "t1")])
    ids = [i.id for i in store.inbox_list(tenant, "alice")]
    leaks = {
        "candidates": _all(store, other) + _all(store, other, customer_id="alice"),
        "runs": store.runs(other),
        "quarantine": store.quarantined(other, f"{tenant}-1"),
        "inbox": store.inbox_list(other, "alice"),
    }
    for what, found in leaks.items():
        if found:
            _fail(where, f"tenant {other!r} sees {what} of tenant {tenant!r}: {found}")
    if store.inbox_mark_read(other, "alice", [i for i in ids if i is not None]) != 0:
        _fail(where, "a tenant marked another tenant's inbox message read")


__all__ = ["check_channel", "check_config", "check_connector", "check_filter", "check_registration",
           "check_scorer", "check_store"]

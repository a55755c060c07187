"""What docs/digests.md promises a new user, checked against what the code does (an
acceptance tester's findings): each test names the sentence it holds the code to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from ceap.delivery.digest import Digests
from ceap.delivery.digest_store import list_digests
from ceap.delivery.templates.checks import validate_program_templates
from ceap.errors import SpecError
from ceap.model import RunRecord
from ceap.spec.loading import load_program, parse_program
from ceap.spec.program import ProgramSpec
from ceap.store import Store, open_store
from ceap.testing.doubles import make_candidates

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def _program(name: str, digest: dict[str, Any]) -> ProgramSpec:
    return parse_program({
        "name": name, "source": {"type": "csv", "path": "x.csv"},
        "selection": {"one_per_customer": False},
        "action": {"type": "inform", "channels": ["inapp"], "template": name,
                   "digest": digest}})


def _held(store: Store, program: str, at: datetime, dedup: str) -> None:
    store.write_run(RunRecord(f"r-{dedup}", "default", program, "succeeded", at), make_candidates(
        1, now=at, program=program, customer_id="alice", status="digest", channels=["inapp"],
        template=program, category="marketing", payload={"n": dedup}, dedup_key=dedup))


def test_ceap_digests_names_the_program_whose_item_opened_a_shared_digest(store: Store) -> None:
    """"Programs sharing a key share one digest: the first item's program decides the
    window, the template and the channels": `ceap digests` shows that program, not the
    alphabetically first one."""
    programs = {"zeta": _program("zeta", {"key": "shared", "window": "1h"}),
                "alpha": _program("alpha", {"key": "shared", "window": "3h"})}
    _held(store, "zeta", T0, "z1")
    _held(store, "alpha", T0 + timedelta(minutes=5), "a1")
    digests = Digests(store, programs)
    digests.step(T0 + timedelta(minutes=10))
    [row] = list_digests(store, "default")
    assert (row.program, row.items, row.due_at) == ("zeta", 2, T0 + timedelta(hours=1))
    assert digests.step(T0 + timedelta(hours=1)).flushed == 1
    [row] = list_digests(store, "default")
    assert row.program == "zeta" and row.message_id is not None
    with store.tx() as tx:
        program = tx.execute("SELECT program FROM candidates WHERE id = ?",
                             (row.message_id,)).fetchone()[0]
    assert program == "zeta"


def test_a_template_guarded_by_digest_is_defined_validates_without_a_digest(tmp_path: Path) -> None:
    """"its template should then render without `digest` too (`{% if digest is defined
    %}`)": such a template passes `ceap validate` in a program without a digest, an
    unguarded one does not."""
    (tmp_path / "templates").mkdir()
    guarded = "{% if digest is defined %}{{ digest.count }} comments{% else %}a comment{% endif %}"
    program = {"name": "promo", "source": {"type": "csv", "path": "x.csv"},
               "action": {"type": "inform", "channels": ["inapp"], "template": "promo"}}
    path = tmp_path / "promo.yaml"
    path.write_text(yaml.safe_dump(program))
    for title, problems in ((guarded, 0), ("{{ digest.count }} comments", 1)):
        (tmp_path / "templates" / "promo.yaml").write_text(yaml.safe_dump(
            {"inapp": {"title": title, "body": "x"}}))
        found = validate_program_templates(load_program(path), tmp_path, {})
        assert len(found) == problems, found


def test_sweep_keeps_held_candidates_past_their_expiry_until_their_digest_goes(store: Store) -> None:
    """"A held candidate's own `expires_at` does not apply while it is held": a 20-day
    digest outlives its items' 7-day expiry; `ceap sweep` (``sweep_expired``) keeps them,
    so the digest still lists them when it is due."""
    programs = {"slow": _program("slow", {"window": "20d"})}
    _held(store, "slow", T0, "m1")                # expires T0 + 7d; the digest is due T0 + 20d
    _held(store, "slow", T0, "m2")
    digests = Digests(store, programs)
    digests.step(T0)                              # m1, m2 in_digest
    _held(store, "slow", T0 + timedelta(hours=1), "m3")   # still `digest`: not collected yet
    due = T0 + timedelta(days=20)
    assert store.sweep_expired(due - timedelta(hours=1)) == 0
    stats = digests.step(due)
    assert (stats.flushed, stats.items) == (1, 3)
    assert store.sweep_expired(due + timedelta(days=8)) == 4  # the digested items, the message


@pytest.mark.parametrize(("timezone", "message"), [
    ("Customer", "unknown time zone 'Customer' (did you mean 'customer'?)"),
    ("Nowhere", "unknown time zone 'Nowhere' (customer, or an IANA name such as Europe/Paris or UTC)"),
    ("Europe/Pariss", "unknown time zone 'Europe/Pariss' (did you mean 'Europe/Paris'?)"),
])
def test_an_unknown_digest_time_zone_names_customer_among_the_choices(timezone: str,
                                                                      message: str) -> None:
    """"`timezone`: `customer`, `UTC` or an IANA name": a wrong one says which it could be."""
    with pytest.raises(SpecError, match=re.escape(f"action.digest.timezone: {message}")):
        _program("daily", {"schedule": "daily", "timezone": timezone})


def test_a_late_candidate_of_the_same_instant_gets_its_own_message_with_key_2(store: Store) -> None:
    """"When two windows of one customer and key would start at the same instant (a late
    candidate after its digest was sent), the second message's dedup key gets `:2`."""
    programs = {"comments": _program("comments", {"window": "1h"})}
    digests = Digests(store, programs)
    _held(store, "comments", T0, "c1")
    digests.step(T0)
    assert digests.step(T0 + timedelta(hours=1)).flushed == 1
    _held(store, "comments", T0, "c2")          # written late, with the first one's time
    stats = digests.step(T0 + timedelta(hours=1, minutes=1))
    assert (stats.held, stats.flushed, stats.items) == (1, 1, 1)
    with store.tx() as tx:
        keys = [r[0] for r in tx.execute("SELECT dedup_key FROM candidates WHERE run_id = 'digest' "
                                         "ORDER BY id")]
    assert keys == ["digest:comments:alice:20261125T120000000000Z",
                    "digest:comments:alice:20261125T120000000000Z:2"]
    rows = list_digests(store, "default")
    assert sorted((r.items, r.message_id is not None) for r in rows) == [(1, True), (1, True)]


def test_payload_digest_items_in_a_template_is_an_error_of_validate(tmp_path: Path) -> None:
    """"write `digest.items` in templates: `payload.digest.items` is the mapping's `items`
    method": `ceap validate` says so, rather than the render failing at send time."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "promo.yaml").write_text(yaml.safe_dump({"inapp": {
        "title": "{{ payload.digest.count }} offers",
        "body": "{% for item in payload.digest.items %}{{ item.payload.n }}{% endfor %}"}}))
    path = tmp_path / "promo.yaml"
    path.write_text(yaml.safe_dump({
        "name": "promo", "source": {"type": "csv", "path": "x.csv"},
        "action": {"type": "inform", "channels": ["inapp"], "template": "promo",
                   "digest": {"window": "1h"}}}))
    [(field, problem)] = validate_program_templates(load_program(path), tmp_path, {})
    assert field == "action.template"
    assert problem.endswith("inapp.body: write digest.items: payload.digest.items is the "
                            "mapping's method (docs/digests.md#the-template)")


def test_an_unknown_digest_field_is_an_error_of_validate(tmp_path: Path) -> None:
    """The template table lists `digest.count`, `items`, `more`, `key`, `window_start`,
    `window_end`: another name is reported by `ceap validate`, not at send time."""
    from dataclasses import fields

    from ceap.delivery.templates.checks import DIGEST_FIELDS
    from ceap.spec.digest import DigestView

    assert {f.name for f in fields(DigestView)} == DIGEST_FIELDS
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "promo.yaml").write_text(yaml.safe_dump({"inapp": {
        "title": "{{ digest.total }} offers, {{ digest.count }} {{ digest.window_end }}",
        "body": "{% for item in digest.items %}{{ item.payload.n }}{% endfor %}{{ digest.more }}"}}))
    path = tmp_path / "promo.yaml"
    path.write_text(yaml.safe_dump({
        "name": "promo", "source": {"type": "csv", "path": "x.csv"},
        "action": {"type": "inform", "channels": ["inapp"], "template": "promo",
                   "digest": {"window": "1h"}}}))
    [(_, problem)] = validate_program_templates(load_program(path), tmp_path, {})
    assert problem.endswith("inapp.title: digest has no field 'total' (fields: count, items, key, "
                            "more, window_end, window_start)")

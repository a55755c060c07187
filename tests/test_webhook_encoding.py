"""What the signed webhook puts on the wire, piece by piece: the JSON body (orjson,
as ``json.dumps(default=str)`` wrote it), the body's time stamp and the URL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from ceap.channels.webhook import WebhookChannel, dumps, fill_url, iso_seconds
from ceap.testing import make_messages


def reference(value: Any) -> bytes:
    """The encoding before orjson."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


@pytest.mark.parametrize("value", [
    {"type": "ceap.action", "data": {"title": "Héllo ✓ \"quoted\" \\ / \n\t\u0001", "n": 3, "x": 0.1,
                                     "neg": -2.5, "none": None, "ok": True, "list": [1, "a", {"b": []}]}},
    {"unicode": "日本語 \u2028 emoji \U0001f600", "empty": {}, "big": 2**63 - 1},
])
def test_plain_json_is_byte_identical(value: Any) -> None:
    assert dumps(value) == reference(value)


@pytest.mark.parametrize("value", [
    {"when": datetime(2026, 12, 7, 9, 30, tzinfo=UTC), "day": date(2026, 12, 7)},  # str(), as before
    {"amount": Decimal("12.50"), "tags": {"a"}},                                    # str() of the rest
    {1: "int key", "huge": 2**70},                                                   # orjson refuses: json
])
def test_values_json_has_no_type_for_read_back_as_before(value: Any) -> None:
    assert json.loads(dumps(value)) == json.loads(reference(value))


def test_the_body_time_stamp() -> None:
    assert iso_seconds(0) == "1970-01-01T00:00:00Z"
    assert iso_seconds(1_796_650_200) == datetime.fromtimestamp(1_796_650_200, UTC) \
        .isoformat().replace("+00:00", "Z")
    assert iso_seconds(0) == "1970-01-01T00:00:00Z"  # not the last one kept


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/t/{tenant_id}/c/{customer_id}?p={program}",
                                 "http://127.0.0.1:9/fixed"])
def test_the_url_is_filled_as_before(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s")
    channel = WebhookChannel.from_dict({"type": "webhook", "url": url, "secret_env": "HOOK_SECRET",
                                        "allow_private": True})
    try:
        for m in make_messages(2, customer_id=lambda i: f"a/b?{i} é", channel="webhook"):
            assert channel.url(m) == fill_url(url, m)
    finally:
        channel.close()


def test_the_channel_signer_signs_as_sign_does() -> None:
    from ceap.channels.webhook import Signer, sign

    signer = Signer(b"k" * 32)
    for body in (b"{}", b'{"a":"\xc3\xa9"}' * 100):
        assert signer("acme:k1", 1_796_650_200, body) == sign(b"k" * 32, "acme:k1", 1_796_650_200, body)
    assert "k" * 8 not in repr(signer)

"""The HTTP helpers every HTTP channel uses (docs/delivery.md#externalchannel-and-httpchannel):
one rule for the wait of a retryable answer, whichever helper maps it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ceap.channels.http_common import (
    DEFAULT_THROTTLE,
    Response,
    body_retry_after,
    guarded_client,
    http_failure,
    result_for,
    send_json,
    try_request,
)
from ceap.testing import ProviderServer, Reply


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    with ProviderServer() as server:
        yield server


def answer(status: int, body: bytes = b"", **headers: str) -> Response:
    return Response(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


@pytest.mark.parametrize(("response", "wait"), [
    (answer(429), DEFAULT_THROTTLE),            # no header: a second, as http_failure says
    (answer(429, retry_after="7"), 7.0),
    (answer(503), None),
    (answer(503, retry_after="3"), 3.0),
])
def test_result_for_and_http_failure_agree(response: Response, wait: float | None) -> None:
    mapped = result_for("k", response)
    assert (mapped.status, mapped.retryable, mapped.retry_after) == ("failed", True, wait)
    assert mapped == http_failure("k", response.status, response.headers, f"HTTP {response.status}")


@pytest.mark.parametrize(("reader", "wait"), [
    (body_retry_after(), 2.5),                        # the body's wait wins over the header
    (body_retry_after("retry_after_ms", scale=0.001), 9.0),
    (body_retry_after("absent"), 4.0),                # a KeyError: the header rule
    (lambda r: "soon", 4.0),                          # not a number: the header rule
    (lambda r: -1.0, 4.0),
    (lambda r: float("inf"), 4.0),
    (lambda r: True, 4.0),
])
def test_a_reader_of_the_body_sets_the_wait(reader: Any, wait: float) -> None:
    response = answer(429, b'{"retry_after": 2.5, "retry_after_ms": 9000}', retry_after="4")
    assert result_for("k", response, retry_after=reader).retry_after == wait


def test_a_body_that_is_not_json_falls_back_to_the_header_rule() -> None:
    assert result_for("k", answer(429, b"<html>slow down</html>"),
                      retry_after=body_retry_after()).retry_after == DEFAULT_THROTTLE
    assert result_for("k", answer(200, b"not json"), retry_after=body_retry_after()).status == "sent"
    assert result_for("k", answer(400, b'{"retry_after": 5}'), retry_after=body_retry_after()) \
        == http_failure("k", 400, {}, "HTTP 400")  # permanent: no wait


def test_send_json_reads_the_wait_and_the_id(provider: ProviderServer) -> None:
    provider.script(Reply(429, {"retry_after": 1.25}, headers={"Retry-After": "2"}),
                    Reply(429, "plain text"),
                    Reply(201, {"id": 42}))
    client = guarded_client(allow_private=True, timeout=5)
    try:
        url = f"{provider.url}/send"
        first = send_json(client, url, {"a": 1}, {}, "k1", retry_after=body_retry_after())
        second = send_json(client, url, {"a": 2}, {}, "k2", retry_after=body_retry_after())
        third = send_json(client, url, {"a": 3}, {"X-Key": "v"}, "k3",
                          provider_id=lambda r: str(r.json()["id"]))
        raw = try_request(client, "GET", f"{provider.url}/status", None, {}, "k4")
    finally:
        client.close()
    assert (first.retryable, first.retry_after) == (True, 1.25)
    assert (second.retryable, second.retry_after) == (True, DEFAULT_THROTTLE)
    assert (third.status, third.provider_id) == ("sent", "42")
    assert isinstance(raw, Response) and raw.status == 200 and raw.json() == {}
    [*_, last_post] = provider.calls("/send")
    assert last_post.json() == {"a": 3} and last_post.headers["x-key"] == "v"
    assert last_post.headers["content-type"] == "application/json"

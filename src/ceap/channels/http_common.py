"""HTTP for channels that POST to a provider or to a URL a user configured.

The API is a few names::

    client = guarded_client(allow_private=False, timeout=10.0)
    result = send_json(client, url, payload, headers, key)     # -> SendResult
    result = send_request(client, "POST", url, body, headers, key)
    answer = try_request(client, "POST", url, body, headers, key)  # Response | SendResult
    client.close()

and ``HttpChannel``, the base of a channel that POSTs (an ``ExternalChannel``
holding a ``guarded_client``). ``guarded_client`` is an ``http_client.HttpClient``:
one keep-alive connection per host and thread, each request sent in one
write and its answer parsed in C (httptools), and the SSRF guard of
RELIABILITY.md (``ssrf``) applied when it connects: http(s) only; the host is
resolved and every address is checked, then the socket connects to a checked
address (resolve and pin, so a DNS answer that changes between check and
connect cannot slip through); loopback, private, CGNAT, unique-local IPv6
and other non-global addresses are refused unless ``allow_private`` (a
self-hosted install, tests on loopback); link-local addresses (cloud
metadata at 169.254.169.254) are refused always. No redirect is followed
and no proxy variable is read.

Answers map to ``SendResult``: 2xx sent; 429, 408, 425 and 5xx retryable
with the wait the target asked for (a reader of the body's wait when the
channel gives one, else ``Retry-After``, else one second for a 429: the rule
of ``http_status.http_failure``); 3xx and other 4xx permanent;
time-outs and connection failures retryable, their error starting with
``unreachable:``. Errors name the status or the failure, never the URL (it
may hold a token) and never the target's response body.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import Field

from ceap.channels.base import Message, SendJournal, SendResult
from ceap.channels.external import UNREACHABLE, ExternalChannel, ExternalConfig, halts
from ceap.channels.http_client import MAX_BODY, HttpClient, ProtocolError, Response
from ceap.channels.http_loop import BatchJournal, HttpRequest, Lane, drive
from ceap.channels.http_status import DEFAULT_THROTTLE, http_failure, is_retryable, parse_retry_after
from ceap.channels.ssrf import Refused, address_allowed, check_url, connect_checked, refusal
from ceap.plugin import PluginConfig

#: reads, from a failed answer, the seconds the provider asked to wait (None: it did not say)
WaitReader = Callable[[Response], float | None]


def guarded_client(allow_private: bool = False, timeout: float = 10.0) -> HttpClient:
    """A client that applies the SSRF guard at every connection (see the module doc)."""
    return HttpClient(allow_private=allow_private, timeout=timeout)


def body_retry_after(field: str = "retry_after", scale: float = 1.0) -> WaitReader:
    """A ``WaitReader`` for providers that put the wait in a JSON body: the number under the
    top-level ``field``, times ``scale`` (``0.001`` for milliseconds). Discord answers a 429
    with ``{"retry_after": 1.5, ...}``: ``retry_after=body_retry_after()``."""

    def read(response: Response) -> float | None:
        value = response.json()[field]
        return float(value) * scale if isinstance(value, int | float) else None

    return read


def read_wait(retry_after: WaitReader | None, response: Response) -> float | None:
    """What ``retry_after`` reads from ``response``: None when it is not given, fails (a body
    that is not JSON, a missing field) or gives anything but a finite number ≥ 0."""
    if retry_after is None:
        return None
    try:
        wait = retry_after(response)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait < float("inf"):
        return None
    return float(wait)


def result_for(key: str, response: Response, provider_id: str | None = None,
               retry_after: WaitReader | None = None) -> SendResult:
    """2xx sent; 3xx and 4xx permanent (but 408, 425, 429); 5xx retryable; status only in
    errors. A retryable answer waits what ``retry_after`` reads from it, else its
    ``Retry-After``, else ``DEFAULT_THROTTLE`` (one second) for a 429."""
    status = response.status
    if 200 <= status < 300:
        return SendResult(key, "sent", provider_id=provider_id)
    if 300 <= status < 400:
        return SendResult(key, "failed", error=f"HTTP {status}: redirects are not followed")
    wait = read_wait(retry_after, response) if is_retryable(status) else None
    return http_failure(key, status, response.headers, f"HTTP {status}", wait=wait)


def failure_for(key: str, exc: BaseException, timeout: float) -> SendResult:
    """A request that got no answer: refused by the guard (permanent) or unreachable (retryable)."""
    if isinstance(exc, Refused):
        return SendResult(key, "failed", error=f"refused: {exc}")
    if isinstance(exc, TimeoutError):
        return SendResult(key, "failed", error=f"{UNREACHABLE} time-out after {timeout:g} s", retryable=True)
    return SendResult(key, "failed", error=f"{UNREACHABLE} {type(exc).__name__}", retryable=True)


def try_request(client: HttpClient, method: str, url: str, body: bytes | None,
                headers: Mapping[str, str], key: str) -> Response | SendResult:
    """The ``Response`` whatever its status, or the failure to get one as a ``SendResult``
    (refused by the guard: permanent; time-out or connection failure: retryable). For
    channels that read the body, e.g. providers that answer errors with a 200."""
    try:
        return client.request(method, url, body, headers)
    except (Refused, OSError, http.client.HTTPException) as exc:
        return failure_for(key, exc, client.timeout)


def send_request(client: HttpClient, method: str, url: str, body: bytes | None,
                 headers: Mapping[str, str], key: str,
                 provider_id: Callable[[Response], str | None] | None = None,
                 retry_after: WaitReader | None = None) -> SendResult:
    """One request as a ``SendResult``; ``provider_id`` reads the id from a 2xx answer (a
    ``ValueError``, ``KeyError`` or ``TypeError`` it raises gives no id), ``retry_after``
    the wait from a retryable one (see ``result_for``)."""
    response = try_request(client, method, url, body, headers, key)
    if isinstance(response, SendResult):
        return response
    result = result_for(key, response, retry_after=retry_after)
    if result.status == "sent" and provider_id is not None:
        try:
            pid = provider_id(response)
        except (ValueError, KeyError, TypeError):
            pid = None
        return SendResult(key, "sent", provider_id=pid)
    return result


def json_request(url: str, payload: Any, headers: Mapping[str, str]) -> HttpRequest:
    """The POST of ``payload`` as compact JSON (``Content-Type: application/json``)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return HttpRequest("POST", url, body, {"Content-Type": "application/json", **headers})


def send_json(client: HttpClient, url: str, payload: Any, headers: Mapping[str, str], key: str,
              provider_id: Callable[[Response], str | None] | None = None,
              retry_after: WaitReader | None = None) -> SendResult:
    """POST ``payload`` as JSON (see ``send_request``)."""
    return send_request(client, *json_request(url, payload, headers), key, provider_id, retry_after)


class HttpConfig(ExternalConfig):
    """Fields of a channel that POSTs over ``guarded_client``."""

    type: str
    allow_private: bool = Field(False, description="allow loopback and private targets (self-hosted)")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds to connect, and to wait for each read")
    one_thread: bool = Field(True, description="drive the lanes from one thread (non-blocking sockets, "
                                               "journal commits in that thread) where the channel can; "
                                               "false: a thread per lane")


HC = TypeVar("HC", bound=HttpConfig)


class HttpChannel(ExternalChannel[HC]):
    """An ``ExternalChannel`` holding a ``guarded_client`` (``self.client``).

    A subclass either implements ``deliver_one`` (a thread per lane), or ``request``
    (the message's ``HttpRequest``, or a ``SendResult`` to fail it without a call) and
    ``answer`` (the ``Response`` as a ``SendResult``): then ``send`` drives every lane
    from one thread (``http_loop``; with the dispatcher's journal, its commits too),
    unless ``one_thread`` is false, and ``deliver_one`` is the two in a row."""

    config_base: ClassVar[type[PluginConfig] | None] = HttpConfig  # checked at registration

    #: the share of the lanes busy at a commit that answer before the next commit (1.0: a
    #: commit per round of lanes), and how long after a first answer a commit may wait
    gather: ClassVar[float] = 1.0
    linger: ClassVar[float] = 0.002

    def __init__(self, config: HC, context: Any = None):
        super().__init__(config, context)
        self.client = guarded_client(config.allow_private, config.timeout)
        self._loop_lanes: list[Lane] = []

    def request(self, message: Message) -> HttpRequest | SendResult:
        """The request that delivers ``message`` (only for a channel that uses the loop)."""
        raise NotImplementedError

    def answer(self, message: Message, response: Response) -> SendResult:
        """The result of ``message`` from the provider's ``response`` (default: ``result_for``)."""
        return result_for(message.idempotency_key, response)

    def deliver_one(self, message: Message) -> SendResult:
        request = self.request(message)
        if isinstance(request, SendResult):
            return request
        response = try_request(self.client, *request, message.idempotency_key)
        return response if isinstance(response, SendResult) else self.answer(message, response)

    def loop_ready(self) -> bool:
        """This channel builds requests (``request``) and its config allows one thread."""
        return type(self).request is not HttpChannel.request and bool(self.config.one_thread)

    def _drive(self, messages: Sequence[Message], todo: list[int], results: list[SendResult | None],
               journal: SendJournal | None) -> bool:
        if not todo or not self.loop_ready():
            return False
        if journal is not None and not getattr(journal, "batched", False):
            return False  # a journal without its batch form: the threaded lanes
        while len(self._loop_lanes) < min(self.config.concurrency, len(todo)):
            self._loop_lanes.append(Lane(self.client))
        client = self.client
        drive(self, self._loop_lanes, messages, todo, results, cast(BatchJournal | None, journal),
              client.timeout, lambda key, exc: failure_for(key, exc, client.timeout),
              gather=self.gather, linger=self.linger)
        return True

    def close(self) -> None:
        super().close()
        self.client.close()


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what may be printed of a URL that can hold a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


__all__ = ["DEFAULT_THROTTLE", "MAX_BODY", "UNREACHABLE", "HttpChannel", "HttpClient", "HttpConfig",
           "HttpRequest",
           "ProtocolError", "Refused", "Response", "WaitReader", "address_allowed", "body_retry_after",
           "check_url", "connect_checked", "failure_for", "guarded_client", "halts", "http_failure",
           "json_request",
           "origin", "parse_retry_after", "read_wait", "refusal", "result_for", "send_json",
           "send_request", "try_request"]

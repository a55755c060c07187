"""NATS JetStream through a durable pull consumer (``pip install 'ceap[nats]'``).

The group is the durable consumer: the workers of a group fetch from it and
share its messages. ``commit`` acknowledges; a message left unacknowledged for
``ack_wait`` seconds (a killed worker's) is delivered again, to any worker of
the group. ``close`` gives back (NAK) what was fetched and not committed, so
another worker gets it at once. The stream is created with ``subjects`` when
missing. ``publish`` sets ``Nats-Msg-Id`` to the event id, so the stream drops
a duplicate sent within its duplicate window.

nats-py is asyncio: the connector owns one event loop in a daemon thread and
calls into it synchronously.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ceap.connectors.base import ConnectorConfig
from ceap.connectors.streams_common import Url, body_keys, consumer_name, env_value, need
from ceap.errors import SourceError
from ceap.realtime.source import Received, StreamConfig, StreamConnector

log = logging.getLogger(__name__)

_NAME = r"^[A-Za-z0-9_\-]+$"    # JetStream stream and consumer names


class NatsJetStreamConfig(StreamConfig):
    type: Literal["nats_jetstream"] = "nats_jetstream"
    group: str = Field("ceap", pattern=_NAME, description="consumer group: the durable consumer's name")
    stream: str = Field(pattern=_NAME, description="the JetStream stream")
    subjects: list[str] = Field(default_factory=list, description="the stream's subjects (default: its name)")
    subject: str | None = Field(None, description="subject to publish to (default: the first of subjects)")
    servers: list[Url] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    url_env: str | None = Field(None, description="environment variable holding the server URL(s), "
                                                  "comma-separated, with credentials")
    user: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    token_env: str | None = Field(None, description="environment variable holding the token")
    creds_file: str | None = Field(None, description="NATS credentials file (relative to the project)")
    ack_wait: float = Field(30.0, gt=0, description="seconds before an unacknowledged message is redelivered")
    max_ack_pending: int = Field(10_000, gt=0, description="messages the group holds unacknowledged at most")
    start: Literal["earliest", "latest"] = Field("earliest", description="where a new group starts reading")
    create_stream: bool = Field(True, description="create the stream when missing")
    request_timeout: float = Field(10.0, gt=0, description="seconds to wait for the server")

    @model_validator(mode="after")
    def _publish_subject(self) -> NatsJetStreamConfig:
        subject = self.subject or (self.subjects or [self.stream])[0]
        if "*" in subject or ">" in subject:
            raise ValueError("subject: give a subject to publish to (the first of subjects has a wildcard)")
        return self


class _Loop:
    """An asyncio event loop in a daemon thread, called into synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ceap-nats", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        # wait, then look: a TimeoutError the coroutine raised is its own, not this wait's
        # (asyncio's and concurrent.futures' TimeoutError are one class since Python 3.11)
        if not concurrent.futures.wait([future], timeout).done:
            future.cancel()
            raise SourceError(f"NATS did not answer within {timeout:g} s")
        return future.result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:   # what a time-out left running (a connect that retries)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class NatsJetStreamConnector(StreamConnector[NatsJetStreamConfig]):
    config_model: ClassVar[type[ConnectorConfig]] = NatsJetStreamConfig

    def __init__(self, config: NatsJetStreamConfig, context: Any = None):
        super().__init__(config, context)
        self._nats = need("nats", config.type, "nats", "nats-py")
        self.name = consumer_name(config.consumer)
        self._subjects = config.subjects or [config.stream]
        self._held: dict[str, Any] = {}   # fetched, not committed: given back on close
        self._loop = _Loop()
        try:
            self._call(self._connect())
        except SourceError as exc:
            self._loop.stop()
            raise SourceError(f"nats stream {config.stream!r}: cannot connect: {exc}") from None
        except BaseException:
            self._loop.stop()
            raise

    def _call(self, coro: Coroutine[Any, Any, Any], extra: float = 0.0) -> Any:
        try:
            return self._loop.run(coro, self.config.request_timeout + extra)
        except (self._nats.errors.Error, TimeoutError) as exc:
            raise SourceError(f"nats stream {self.config.stream!r}: {str(exc) or 'timed out'}") from None

    async def _connect(self) -> None:
        c, api = self.config, self._nats.js.api
        servers = env_value(c.type, c.url_env, "server URL", self.context).split(",") if c.url_env \
            else c.servers
        async def error(exc: Exception) -> None:
            log.warning("nats stream %s: %s", c.stream, exc)

        options: dict[str, Any] = {"name": self.name, "connect_timeout": c.request_timeout,
                                   "max_reconnect_attempts": -1, "error_cb": error}
        if c.user:
            options["user"] = c.user
        if c.password_env:
            options["password"] = env_value(c.type, c.password_env, "password", self.context)
        if c.token_env:
            options["token"] = env_value(c.type, c.token_env, "token", self.context)
        if c.creds_file:
            options["user_credentials"] = str(self.context.path(c.creds_file))
        self._nc = await self._nats.connect(servers=[s.strip() for s in servers], **options)
        self._js = self._nc.jetstream(timeout=c.request_timeout)
        try:
            await self._js.stream_info(c.stream)
        except self._nats.js.errors.NotFoundError:
            if not c.create_stream:
                raise SourceError(f"nats: no stream {c.stream!r} (and create_stream is false)") from None
            await self._js.add_stream(name=c.stream, subjects=self._subjects)
        consumer = api.ConsumerConfig(
            durable_name=c.group, ack_policy=api.AckPolicy.EXPLICIT, ack_wait=c.ack_wait,
            max_ack_pending=c.max_ack_pending,
            deliver_policy=api.DeliverPolicy.ALL if c.start == "earliest" else api.DeliverPolicy.NEW)
        try:
            await self._js.add_consumer(c.stream, consumer)
        except self._nats.js.errors.BadRequestError:
            await self._js.consumer_info(c.stream, c.group)  # exists with other settings: use it as it is
        self._sub = await self._js.pull_subscribe_bind(durable=c.group, stream=c.stream)

    def describe(self) -> str:
        return f"nats stream {self.config.stream} (consumer {self.config.group})"

    async def _fetch(self, n: int, timeout: float) -> list[Any]:
        try:
            return await self._sub.fetch(n, timeout=max(timeout, 0.05))
        except TimeoutError:  # nats.errors.TimeoutError, or a bare one when fetch's own deadline passed
            return []

    def poll(self, max_messages: int, timeout: float) -> list[Received]:
        msgs = self._call(self._fetch(max_messages, timeout), extra=timeout)
        self._held.update((m.reply, m) for m in msgs)
        return [Received(m.data, m) for m in msgs]

    async def _ack(self, msgs: Sequence[Any]) -> None:
        for m in msgs:
            with contextlib.suppress(self._nats.errors.MsgAlreadyAckdError):
                await m.ack()
            self._held.pop(m.reply, None)
        await self._nc.flush(timeout=self.config.request_timeout)

    def commit(self, tokens: Sequence[Any]) -> None:
        if tokens:
            self._call(self._ack(tokens), extra=1.0)

    async def _publish(self, bodies: Sequence[bytes]) -> None:
        subject = self.config.subject or self._subjects[0]

        async def one(body: bytes) -> None:
            event_id = body_keys(body)[0]
            await self._js.publish(subject, body, headers={"Nats-Msg-Id": event_id} if event_id else None)

        await asyncio.gather(*(one(b) for b in bodies))

    def publish(self, bodies: Sequence[bytes]) -> None:
        self._call(self._publish(bodies), extra=len(bodies) / 1000)

    async def _lag(self) -> int:
        info = await self._js.consumer_info(self.config.stream, self.config.group)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def lag(self) -> int | None:
        """Messages not yet delivered to the group plus those delivered and not acknowledged."""
        return int(self._call(self._lag()))

    async def _close(self) -> None:
        for m in list(self._held.values()):
            with contextlib.suppress(self._nats.errors.Error):
                await m.nak()
        self._held.clear()
        await self._nc.close()

    def close(self) -> None:
        if getattr(self, "_nc", None) is not None and not self._loop.loop.is_closed():
            with contextlib.suppress(SourceError):
                self._call(self._close())
        self._loop.stop()

"""The in-app inbox channel: messages land in the store's inbox table, where
client apps list them and mark them read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from ceap.channels.base import Channel, ChannelConfig, Message, SendResult
from ceap.errors import PluginError
from ceap.model import InboxItem
from ceap.store.base import Store


class InAppConfig(ChannelConfig):
    type: Literal["inapp"] = "inapp"
    store: str | None = Field(None, description="store URL; default: the running store")


class InAppChannel(Channel[InAppConfig]):
    """Writes each message to the customer's inbox; a repeated idempotency key is
    reported as ``duplicate`` and not stored twice."""

    config_model: ClassVar[type[ChannelConfig]] = InAppConfig
    provider_dedup: ClassVar[bool] = True  # the inbox is unique by idempotency key
    in_flight: ClassVar[int] = 1000  # one insert per call; a resend after a crash is a duplicate
    _own_store: Store | None = None

    def _store(self) -> Store:
        if self.config.store:
            if self._own_store is None:
                from ceap.store.base import open_store

                self._own_store = open_store(self.config.store)
            return self._own_store
        if self.context.store is None:
            raise PluginError("inapp channel: no store (set 'store' or run it from a dispatcher)")
        store: Store = self.context.store
        return store

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        items = [InboxItem(tenant_id=m.tenant_id, customer_id=m.customer_id,
                           idempotency_key=m.idempotency_key, program=m.program, title=m.title,
                           body=m.body, payload=m.payload, candidate_id=m.candidate_id)
                 for m in messages]
        added = self._store().inbox_add(items)
        return [SendResult(m.idempotency_key, "delivered" if new else "duplicate")
                for m, new in zip(messages, added, strict=True)]

    def close(self) -> None:
        if self._own_store is not None:
            self._own_store.close()
            self._own_store = None

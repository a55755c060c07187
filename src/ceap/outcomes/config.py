"""The ``tracking:`` and ``exports:`` sections of ``ceap.yaml`` (see docs/outcomes.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ceap.durations import Duration
from ceap.factories import empty_list

#: what the outbound stream carries
RecordKind = Literal["sent", "suppressed", "engaged", "converted"]
RECORD_KINDS: tuple[RecordKind, ...] = ("sent", "suppressed", "engaged", "converted")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _public_base(value: str) -> str:
    from ceap.channels.http_common import Refused, check_url

    try:
        check_url(value, allow_private=True)
    except Refused as exc:
        raise ValueError(str(exc)) from None
    if "?" in value or "#" in value:
        raise ValueError("base_url is the API's root (no query or fragment)")
    return value.rstrip("/")


class TrackingConfig(_Closed):
    """Open pixel and click tracking. Links are ``<base_url>/t/c/<token>``, the pixel
    ``<base_url>/t/o/<token>``; tokens hold ids only and are signed with
    ``CEAP_SIGNING_SECRET``."""

    base_url: str = Field(description="public root URL of `ceap serve`, e.g. https://t.example.com")
    opens: bool = Field(True, description="add an open pixel to HTML e-mail")
    clicks: bool = Field(True, description="rewrite http(s) links to signed click links")
    link_ttl: Duration = Field(timedelta(days=90), description="links and pixels stop working after this")
    consent: Literal["opt_out", "opt_in"] = Field(
        "opt_out", description="opt_out: track unless the customer revoked the 'tracking' topic; "
                               "opt_in: only customers who granted it")
    exclude: list[str] = Field(default_factory=empty_list,
                               description="URL prefixes never rewritten (the unsubscribe URL never is)")
    scanner_window: Duration = Field(
        timedelta(seconds=5), description="clicks this soon after the send are link scanners: not counted")

    @field_validator("base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        return _public_base(value)

    @model_validator(mode="after")
    def _positive(self) -> TrackingConfig:
        if self.link_ttl <= timedelta(0):
            raise ValueError("link_ttl must be positive")
        return self


class _Export(_Closed):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$",
                             description="names the export's cursor (default: its type)")
    kinds: list[RecordKind] = Field(default_factory=lambda: list(RECORD_KINDS),
                                    description="which records to send")
    grace: Duration = Field(timedelta(seconds=30), description="records younger than this wait for the "
                                                               "next pass (transactions still open)")
    batch: int = Field(10_000, ge=1, le=1_000_000, description="records per file, request or publish")

    def key(self) -> str:
        return self.name or str(getattr(self, "type"))  # noqa: B009


class ParquetExport(_Export):
    type: Literal["parquet"]
    path: str = Field(description="folder; each pass writes new part-*.parquet files")


class JsonlExport(_Export):
    type: Literal["jsonl"]
    path: str = Field(description="file the records are appended to, one JSON object a line")


class WebhookExport(_Export):
    type: Literal["webhook"]
    url: str = Field(description="http(s) URL records are POSTed to, signed (Standard Webhooks)")
    secret_env: str = Field(description="environment variable holding the signing secret")
    allow_private: bool = Field(False, description="allow loopback and private targets (self-hosted)")
    timeout: float = Field(10.0, gt=0, le=120)
    batch: int = Field(500, ge=1, le=10_000, description="records per request")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from ceap.channels.http_common import Refused, check_url

        try:
            check_url(value, allow_private=True)  # the address is checked again at connect time
        except Refused as exc:
            raise ValueError(str(exc)) from None
        return value


class StreamExport(_Export):
    type: Literal["stream"]
    stream: str = Field(description="a stream named in ceap.yaml's streams (Redis, NATS, Kafka...)")
    batch: int = Field(1000, ge=1, le=100_000, description="records per publish")


ExportConfig = Annotated[ParquetExport | JsonlExport | WebhookExport | StreamExport,
                         Field(discriminator="type")]


def check_export_names(exports: list[ParquetExport | JsonlExport | WebhookExport | StreamExport]) -> None:
    seen: set[str] = set()
    for e in exports:
        if e.key() in seen:
            raise ValueError(f"two exports are named {e.key()!r}: give each a distinct 'name'")
        seen.add(e.key())


__all__ = ["RECORD_KINDS", "ExportConfig", "JsonlExport", "ParquetExport", "RecordKind", "StreamExport",
           "TrackingConfig", "WebhookExport", "check_export_names"]

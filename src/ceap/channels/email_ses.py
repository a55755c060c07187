"""E-mail through Amazon SES (API v2, ``SendEmail`` with the raw MIME message
``email_mime.compose_bytes`` writes, as ``smtp`` sends it). Needs boto3: ``pip install 'ceap[ses]'``.

Credentials come from boto3's usual chain (environment, profile, instance
role), never from the config. boto3's own retries are off: the dispatcher
retries. Throttling and 5xx are retryable (the rest of the batch waits a
second); a rejected message or an unverified identity is permanent.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ceap.channels.base import ChannelConfig, Message, SendResult
from ceap.channels.email_compose import POLICY, EmailConfig, compose
from ceap.channels.email_mime import compose_bytes
from ceap.channels.external import UNREACHABLE, ExternalChannel
from ceap.errors import PluginError

#: SES error codes worth another try (with a short wait)
RETRYABLE = frozenset({"TooManyRequestsException", "LimitExceededException", "Throttling",
                       "ThrottlingException", "SendingPausedException", "InternalFailure",
                       "ServiceUnavailable", "ServiceUnavailableException"})


_CRLF = POLICY.clone(linesep="\r\n")


class SesConfig(EmailConfig):
    type: Literal["ses"] = "ses"
    region: str | None = Field(None, description="AWS region (default: boto3's)")
    endpoint_url: str | None = Field(None, description="another endpoint (a VPC endpoint, a local stub)")
    configuration_set: str | None = Field(None, description="SES configuration set (event publishing)")
    timeout: float = Field(10.0, gt=0, le=120, description="seconds to connect, and to read")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")


class SesChannel(ExternalChannel[SesConfig]):
    config_model: ClassVar[type[ChannelConfig]] = SesConfig
    address: ClassVar[str | None] = "email"
    #: SES's starting production quota is 14 messages per second (1 in the sandbox); set your account's
    default_rate_per_sec: ClassVar[float | None] = 14.0

    def __init__(self, config: SesConfig, context: Any = None):
        super().__init__(config, context)
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise PluginError("the ses channel needs boto3: pip install 'ceap[ses]'") from None
        self._client = boto3.session.Session().client(
            "sesv2", region_name=config.region, endpoint_url=config.endpoint_url,
            config=Config(connect_timeout=config.timeout, read_timeout=config.timeout,
                          retries={"max_attempts": 1, "mode": "standard"},
                          max_pool_connections=config.concurrency))

    def __repr__(self) -> str:
        return f"SesChannel(region={self._client.meta.region_name})"

    def deliver_one(self, m: Message) -> SendResult:
        from botocore.exceptions import BotoCoreError, ClientError

        key = m.idempotency_key
        try:
            composed = compose_bytes(m, self.config)  # the bytes smtp sends
            # SES takes no SMTPUTF8: a non-ASCII address is encoded by the email package
            raw = composed.data if not composed.utf8 else compose(m, self.config).as_bytes(policy=_CRLF)
        except ValueError as exc:
            return SendResult(key, "failed", error=str(exc))
        request: dict[str, Any] = {"FromEmailAddress": self.config.from_address,
                                   "Destination": {"ToAddresses": [m.to]},
                                   "Content": {"Raw": {"Data": raw}}}
        if self.config.configuration_set:
            request["ConfigurationSetName"] = self.config.configuration_set
        try:
            answer = self._client.send_email(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in RETRYABLE or status >= 500 or status == 429:
                return SendResult(key, "failed", error=f"SES {code}", retryable=True, retry_after=1.0)
            return SendResult(key, "failed", error=f"SES {code}")
        except BotoCoreError as exc:  # no connection, a time-out, no credentials
            return SendResult(key, "failed", error=f"{UNREACHABLE} {type(exc).__name__}", retryable=True)
        return SendResult(key, "sent", provider_id=answer.get("MessageId"))

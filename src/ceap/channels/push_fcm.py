"""Push notifications through Firebase Cloud Messaging, HTTP v1 API.

``POST {base_url}/v1/projects/{project_id}/messages:send`` with
``{"message": {"token", "notification": {"title", "body"}, "data": {...}}}``
(data: the payload and ``ceap_idempotency_key``; values are strings: others are
sent as JSON). The bearer token is an
OAuth2 access token got with the JWT bearer grant from a service account
(its JSON, or a path to it, in ``credentials_env``), cached until a minute
before it expires; ``token_env`` gives a ready token instead (tests, or a
token minted elsewhere). The grant needs ``pip install 'ceap[fcm]'``.

Rate: FCM allows 600,000 messages a minute per project, hence
``default_rate_per_sec = 10000``. Idempotency: FCM takes no idempotency key
(``provider_dedup`` False; ``sent_keys`` reports repeated keys).

Errors: UNREGISTERED, SENDER_ID_MISMATCH and an INVALID_ARGUMENT about the
registration token are bounces (``bounced: ...``: suppress the token); other
INVALID_ARGUMENT is permanent; QUOTA_EXCEEDED (429), UNAVAILABLE (503) and
INTERNAL (500) are retried with their ``Retry-After``; a 401 drops the cached
access token and is retried.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import Field, model_validator

from ceap.channels.base import ChannelConfig, Message, SendResult, push_data
from ceap.channels.external import env_secret
from ceap.channels.http_common import HttpChannel, HttpConfig, HttpRequest, Refused, Response, failure_for
from ceap.channels.http_status import http_failure
from ceap.channels.receipts import fcm_error, fcm_error_code
from ceap.errors import PluginError

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
#: data keys FCM refuses (and any starting with "google" or "gcm")
RESERVED_DATA_KEYS = frozenset({"from", "message_type", "notification", "collapse_key"})
NO_ANSWER = (Refused, OSError, http.client.HTTPException)


class FcmConfig(HttpConfig):
    type: Literal["fcm"] = "fcm"
    base_url: str = Field("https://fcm.googleapis.com", description="the API root (tests: a local server)")
    project_id: str = Field(pattern=r"^[a-z0-9-]{1,64}$", description="the Firebase project")
    credentials_env: str | None = Field("GOOGLE_APPLICATION_CREDENTIALS", description="env var holding "
                                        "the service account JSON, or the path to it")
    token_env: str | None = Field(None, description="env var holding a ready OAuth2 access token "
                                  "(used instead of the service account)")
    token_uri: str | None = Field(None, description="OAuth2 token endpoint (default: the service "
                                  "account's token_uri)")
    ttl_seconds: int | None = Field(None, ge=0, le=2419200, description="Android TTL (FCM: 4 weeks max)")

    @model_validator(mode="after")
    def _auth(self) -> FcmConfig:
        if not (self.credentials_env or self.token_env):
            raise ValueError("give credentials_env (a service account) or token_env (an access token)")
        return self


def data_strings(payload: dict[str, Any]) -> dict[str, str]:
    """FCM data: string values only, reserved keys left out."""
    return {str(k): v if isinstance(v, str) else json.dumps(v, default=str)
            for k, v in payload.items()
            if k not in RESERVED_DATA_KEYS and not str(k).startswith(("google", "gcm"))}


class FcmChannel(HttpChannel[FcmConfig]):
    config_model: ClassVar[type[ChannelConfig]] = FcmConfig
    address: ClassVar[str | None] = "push_token"
    default_rate_per_sec: ClassVar[float | None] = 10000.0

    def __init__(self, config: FcmConfig, context: Any = None):
        super().__init__(config, context)
        if config.token_env:  # fail when built, naming the variable (read again when used)
            env_secret(self, config.token_env, "FCM access token")
        elif config.credentials_env:
            env_secret(self, config.credentials_env, "FCM service account")
        self._token: tuple[str, float] | None = None  # (access token, monotonic expiry)
        self._token_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FcmChannel(project_id={self.config.project_id}, credentials=**********)"

    # -- OAuth2 ----------------------------------------------------------------
    def access_token(self) -> str:
        cfg = self.config
        if cfg.token_env:
            return env_secret(self, cfg.token_env, "FCM access token").get_secret_value()
        with self._token_lock:
            if self._token and self._token[1] > time.monotonic():
                return self._token[0]
            token, lifetime = self._grant()
            self._token = (token, time.monotonic() + max(lifetime - 60, 0))
            return token

    def _service_account(self) -> dict[str, Any]:
        raw = env_secret(self, str(self.config.credentials_env), "FCM service account").get_secret_value()
        text = raw if raw.lstrip().startswith("{") else self.context.path(raw).read_text()
        try:
            account = json.loads(text)
        except ValueError:
            raise PluginError(f"fcm: {self.config.credentials_env} is not service account JSON") from None
        if not (isinstance(account, dict) and account.get("client_email") and account.get("private_key")):
            raise PluginError("fcm: the service account lacks client_email or private_key")
        return account

    def _grant(self) -> tuple[str, float]:
        try:
            import jwt
        except ImportError:
            raise PluginError("fcm: the service account grant needs PyJWT: "
                              "pip install 'ceap[fcm]'") from None
        account = self._service_account()
        token_uri = self.config.token_uri or account.get("token_uri") or GOOGLE_TOKEN_URI
        now = int(time.time())
        kid = account.get("private_key_id")
        assertion = jwt.encode({"iss": account["client_email"], "scope": SCOPE, "aud": token_uri,
                                "iat": now, "exp": now + 3600}, account["private_key"], algorithm="RS256",
                               headers={"kid": kid} if kid else None)
        body = urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                          "assertion": assertion}).encode()
        response = self.client.request("POST", token_uri, body,
                                       {"Content-Type": "application/x-www-form-urlencoded"})
        if not 200 <= response.status < 300:  # the body may echo the assertion: the status only
            raise TokenError(f"FCM token endpoint answered HTTP {response.status}", response.status)
        answer = response.json()
        return str(answer["access_token"]), float(answer.get("expires_in", 3600))

    # -- sending -----------------------------------------------------------------
    def request(self, message: Message) -> HttpRequest | SendResult:
        cfg, key = self.config, message.idempotency_key
        body: dict[str, Any] = {"token": message.to,
                                "notification": {"title": message.title, "body": message.body}}
        body["data"] = data_strings(push_data(message))
        if cfg.ttl_seconds is not None:
            body["android"] = {"ttl": f"{cfg.ttl_seconds}s"}
        try:  # the token: at most one grant an hour (a blocking request)
            headers = {"Authorization": f"Bearer {self.access_token()}",
                       "Content-Type": "application/json; charset=UTF-8"}
        except TokenError as exc:
            return SendResult(key, "failed", error=str(exc), retryable=exc.status >= 500 or exc.status == 429)
        except NO_ANSWER as exc:
            return failure_for(key, exc, self.client.timeout)
        return HttpRequest("POST", f"{cfg.base_url.rstrip('/')}/v1/projects/{cfg.project_id}/messages:send",
                           json.dumps({"message": body}, ensure_ascii=False).encode(), headers)

    def answer(self, message: Message, response: Response) -> SendResult:
        return self.result(message.idempotency_key, response)

    def result(self, key: str, response: Response) -> SendResult:
        try:
            answer: Any = response.json()
        except ValueError:
            answer = {}
        if 200 <= response.status < 300:
            name = answer.get("name") if isinstance(answer, dict) else None
            return SendResult(key, "sent", provider_id=name)
        code, text = fcm_error_code(answer)
        error = fcm_error(code, text) if code else f"FCM HTTP {response.status}"
        if response.status == 401 and code != "THIRD_PARTY_AUTH_ERROR":
            with self._token_lock:
                self._token = None  # expired or revoked: mint a new one next time
            return http_failure(key, response.status, response.headers, error, retryable=True)
        return http_failure(key, response.status, response.headers, error)


class TokenError(Exception):
    """The OAuth2 token endpoint refused the grant."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

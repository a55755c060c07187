"""What providers say about a message after the send: Twilio status callbacks,
and the push services' error codes that mean "this address is gone".

A bounce is a permanent failure whose error starts with ``bounced:``; the
caller (a receipt endpoint, the suppression policy) can then suppress the
address (phone number, push token) so it is not tried again.

>>> twilio_message_receipt({"MessageSid": "SM1", "MessageStatus": "undelivered",
...                         "ErrorCode": "30005", "To": "+15550001111"}).status
'bounced'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ceap.channels.base import SendResult

ReceiptStatus = Literal["sent", "delivered", "failed", "bounced"]
BOUNCED = "bounced"
UNSUBSCRIBED = "unsubscribed"


def bounce(reason: str) -> str:
    """The error text of a bounce."""
    return f"{BOUNCED}: {reason}"


def is_bounce(outcome: SendResult | str | None) -> bool:
    """True for a permanent failure that means the address no longer exists."""
    error = outcome.error if isinstance(outcome, SendResult) else outcome
    return bool(error) and str(error).startswith(f"{BOUNCED}:")


@dataclass(frozen=True)
class Receipt:
    """One provider callback, in our terms. ``status`` None: still on its way."""

    provider_id: str
    status: ReceiptStatus | None
    raw_status: str
    error: str | None = None
    address: str | None = None
    #: the provider's own id of this callback (retries of one callback share it)
    callback_id: str | None = None


# -- Twilio ------------------------------------------------------------------------

#: Twilio error codes (API answers and callbacks) meaning the number cannot receive
TWILIO_BOUNCE_CODES: dict[int, str] = {
    21211: "invalid phone number",
    21214: "number cannot be reached",
    21217: "invalid phone number",
    21407: "number not supported",
    21612: "number not reachable by SMS",
    21614: "not a mobile number",
    13223: "invalid phone number format",
    13224: "invalid phone number",
    30003: "unreachable handset",
    30005: "unknown handset",
    30006: "landline or unreachable carrier",
}
#: the recipient replied STOP: Twilio refuses until they reply START
TWILIO_UNSUBSCRIBED_CODE = 21610

_SMS_STATUS: dict[str, ReceiptStatus | None] = {
    "accepted": None, "scheduled": None, "queued": None, "sending": None,
    "sent": "sent", "delivered": "delivered", "read": "delivered",
    "undelivered": "bounced", "failed": "failed", "canceled": "failed",
}
#: the ``MessageStatus`` values a Messages status callback may carry
TWILIO_MESSAGE_STATUSES = frozenset(_SMS_STATUS)
_CALL_STATUS: dict[str, ReceiptStatus | None] = {
    "queued": None, "initiated": None, "ringing": None, "in-progress": None,
    "completed": "delivered", "busy": "failed", "no-answer": "failed", "canceled": "failed",
    "failed": "bounced",
}


def twilio_error(code: int | str | None, message: str | None = None) -> str:
    """Our error text for a Twilio error code: ``bounced: ...``, ``unsubscribed: ...`` or
    ``twilio <code>: <message>``."""
    try:
        number = int(code) if code not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    detail = f"twilio {code}" + (f": {message}" if message else "")
    if number == TWILIO_UNSUBSCRIBED_CODE:
        return f"{UNSUBSCRIBED}: the recipient opted out (replied STOP); {detail}"
    if number in TWILIO_BOUNCE_CODES:
        return bounce(f"{TWILIO_BOUNCE_CODES[number]} ({detail})")
    return detail


def _twilio_receipt(form: Mapping[str, Any], sid: str, status_field: str,
                    table: Mapping[str, ReceiptStatus | None], headers: Mapping[str, str] | None) -> Receipt:
    raw = str(form.get(status_field) or "").lower()
    if raw not in table:
        raise ValueError(f"unknown Twilio {status_field} {raw!r}")
    status = table[raw]
    code = str(form.get("ErrorCode") or "").strip() or None
    error = None
    if code == str(TWILIO_UNSUBSCRIBED_CODE):
        status = "failed"  # not a dead number: a revoked consent
        error = twilio_error(code, form.get("ErrorMessage"))
    elif status in ("failed", "bounced") or code:
        error = twilio_error(code, form.get("ErrorMessage")) if code else f"twilio: {raw}"
        if status == "bounced" and not is_bounce(error):
            error = bounce(error)
        elif status == "failed" and is_bounce(error):
            status = "bounced"  # failed for a dead number
    callback_id = None
    if headers:
        callback_id = {k.lower(): v for k, v in headers.items()}.get("i-twilio-idempotency-token")
    return Receipt(str(form.get(sid) or ""), status, raw, error, form.get("To"), callback_id)


def twilio_message_receipt(form: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Receipt:
    """A Messages ``StatusCallback`` form: sent, delivered (also ``read``),
    undelivered (-> bounced), failed; accepted/queued/sending: None (in progress).
    ``I-Twilio-Idempotency-Token`` from ``headers`` identifies retried callbacks."""
    return _twilio_receipt(form, "MessageSid", "MessageStatus", _SMS_STATUS, headers)


def twilio_call_receipt(form: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Receipt:
    """A Calls ``StatusCallback`` form: completed -> delivered; busy, no-answer,
    canceled -> failed; failed (the number could not be called) -> bounced."""
    return _twilio_receipt(form, "CallSid", "CallStatus", _CALL_STATUS, headers)


def twilio_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """``X-Twilio-Signature`` of a form POST to ``url``: HMAC-SHA1 over the URL
    followed by each parameter name and value, sorted by name, base64."""
    data = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_signature_valid(url: str, params: Mapping[str, str], signature: str, auth_token: str) -> bool:
    """Check a callback really came from Twilio (compare in constant time; any text,
    ASCII or not, is a fair ``signature``)."""
    expected = twilio_signature(url, params, auth_token).encode()
    return hmac.compare_digest(expected, (signature or "").encode("utf-8", "surrogatepass"))


# -- push services -------------------------------------------------------------------

#: FCM v1 ``errorCode`` values: the token is gone / the request is wrong / try later
FCM_BOUNCE = {"UNREGISTERED": "token unregistered", "SENDER_ID_MISMATCH": "token belongs to another sender"}
FCM_PERMANENT = {"INVALID_ARGUMENT", "THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED", "NOT_FOUND"}
FCM_RETRYABLE = {"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "UNKNOWN"}

#: APNs ``reason`` values meaning the device token must not be used again
APNS_BOUNCE = {"Unregistered": "device unregistered", "BadDeviceToken": "bad device token",
               "DeviceTokenNotForTopic": "token is not for this topic"}
#: APNs reasons that a later attempt may fix (besides 429 and 5xx)
APNS_RETRYABLE = {"TooManyRequests", "InternalServerError", "ServiceUnavailable", "Shutdown",
                  "ExpiredProviderToken", "IdleTimeout"}


def fcm_error_code(body: Any) -> tuple[str, str]:
    """(errorCode or status, message) from an FCM v1 error body; ("", "") if none."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code = str(error.get("status") or "")
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return code, str(error.get("message") or "")


def fcm_error(code: str, message: str) -> str:
    if code in FCM_BOUNCE:
        return bounce(f"{FCM_BOUNCE[code]} (FCM {code})")
    if code == "INVALID_ARGUMENT" and "registration token" in message.lower():
        return bounce(f"invalid registration token (FCM {code}: {message})")
    return f"FCM {code}: {message}" if message else f"FCM {code}"


def apns_error(status: int, reason: str) -> str:
    if reason in APNS_BOUNCE:
        return bounce(f"{APNS_BOUNCE[reason]} (APNs {status} {reason})")
    return f"APNs {status} {reason}".rstrip()


def webpush_error(status: int, detail: str = "") -> str:
    if status in (404, 410):
        return bounce(f"push subscription expired (HTTP {status})")
    return f"web push HTTP {status}" + (f": {detail}" if detail else "")

"""The schedulers' own webhook signatures (HMAC-SHA256), checked in constant time; stdlib only."""

from __future__ import annotations

import hashlib
import hmac
import time

from shared.exceptions import WebhookSignatureError

# Calendly's guidance: reject a signature older than a few minutes (replays); a future one is a clock problem.
CALENDLY_TOLERANCE_SECONDS = 180


def _hex_hmac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_calcom(secret: str, body: bytes) -> str:
    """Cal.com's `X-Cal-Signature-256`: hex HMAC-SHA256 of the raw body under the webhook secret."""
    return _hex_hmac(secret.encode(), body)


def verify_calcom(secret: str, header: str | None, body: bytes) -> None:
    """Raise WebhookSignatureError unless `header` is the body's Cal.com signature."""
    if not header:
        raise WebhookSignatureError("X-Cal-Signature-256 is missing")
    if not hmac.compare_digest(header.strip().lower().encode(), sign_calcom(secret, body).encode()):
        raise WebhookSignatureError("X-Cal-Signature-256 does not match the body")


def sign_calendly(signing_key: str, body: bytes, timestamp: int) -> str:
    """Calendly's `Calendly-Webhook-Signature` value: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    return f"t={timestamp},v1={_hex_hmac(signing_key.encode(), f'{timestamp}.'.encode() + body)}"


def verify_calendly(signing_key: str, header: str | None, body: bytes,
                    tolerance: int = CALENDLY_TOLERANCE_SECONDS, *, now: float | None = None) -> None:
    """Raise WebhookSignatureError unless `header` signs the body and its timestamp is within tolerance."""
    if not header:
        raise WebhookSignatureError("Calendly-Webhook-Signature is missing")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    stamps, offered = parts.get("t", []), parts.get("v1", [])
    if len(stamps) != 1 or not offered:
        raise WebhookSignatureError("Calendly-Webhook-Signature needs one t= and a v1= signature")
    try:
        stamp = int(stamps[0])
    except ValueError:
        raise WebhookSignatureError("Calendly-Webhook-Signature timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        raise WebhookSignatureError("Calendly-Webhook-Signature timestamp is outside the tolerance")
    expected = _hex_hmac(signing_key.encode(), f"{stamp}.".encode() + body).encode()
    if not any(hmac.compare_digest(expected, candidate.strip().lower().encode()) for candidate in offered):
        raise WebhookSignatureError("Calendly-Webhook-Signature does not match the body")

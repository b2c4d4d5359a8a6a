"""Standard Webhooks 1.0 symmetric signatures (HMAC-SHA256, `whsec_` secrets, `v1,` signatures); stdlib only."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from shared.exceptions import WebhookSignatureError

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SIGNATURE_VERSION = "v1"
# The spec asks for 24 to 64 random bytes; shorter keys are refused rather than silently weak.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE_SECONDS = 300


def decode_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; raise WebhookSignatureError if it is malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookSignatureError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX):].strip()
    try:
        # Tolerate missing padding, as the reference libraries do; reject anything that isn't base64.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSignatureError("a webhook secret must be base64 after the whsec_ prefix") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise WebhookSignatureError(
            f"a webhook secret must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, not {len(key)}")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def _check_id(msg_id: str) -> None:
    # The id is part of the signed content: a "." or whitespace in it would make the content ambiguous.
    if not msg_id or any(ch in msg_id for ch in ". \t\r\n"):
        raise WebhookSignatureError("webhook-id must be non-empty without '.' or whitespace")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256>` signature over `{msg_id}.{timestamp}.{body}`."""
    _check_id(msg_id)
    mac = _digest(decode_secret(secret), msg_id, int(timestamp), body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated (zero-downtime rotation)."""
    if not secrets:
        raise WebhookSignatureError("at least one webhook secret is needed to sign")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def signing_headers(secrets: Sequence[str], msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt (timestamp = now unless given)."""
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature_header(secrets, msg_id, stamp, body),
    }


def verify(secrets: Sequence[str], headers: Mapping[str, str], body: bytes,
           tolerance: int = DEFAULT_TOLERANCE_SECONDS, *, now: float | None = None) -> str:
    """Check the headers sign body under any of secrets; return the webhook-id or raise WebhookSignatureError."""
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    stamp_text = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (msg_id and stamp_text and signatures):
        raise WebhookSignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        stamp = int(stamp_text)
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    # Both directions: an old timestamp is a replay, a future one a clock problem or a forgery.
    if abs(current - stamp) > tolerance:
        raise WebhookSignatureError("webhook-timestamp is outside the tolerance")
    keys = [decode_secret(secret) for secret in secrets]
    offered: list[bytes] = []
    for item in signatures.split(" "):
        version, _, encoded = item.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue  # other schemes (v1a) or junk: not ours to judge
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    for key in keys:
        expected = _digest(key, msg_id, stamp, body)
        # compare_digest on every candidate: constant time per comparison.
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return msg_id
    raise WebhookSignatureError("no signature matches")

"""Verifying a Standard Webhooks signature without a library: the algorithm the C# and Java samples follow.

The app signs `<webhook-id>.<webhook-timestamp>.<raw body>` with HMAC-SHA256, keyed by the base64 part of
the `whsec_...` secret, and sends `webhook-signature: v1,<base64>` (several, space-separated, while a secret
is being rotated). tests/unit/test_docs.py checks this against the standardwebhooks package.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """True when one of the signatures is the secret's, and the timestamp is within five minutes."""
    webhook_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_SECONDS:
        return False  # a replayed or badly delayed delivery
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for signature in headers["webhook-signature"].split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(expected, base64.b64decode(value)):
            return True
    return False

"""Keep identities and join links out of telemetry: hash users, shorten URLs."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit


def hash_user(identifier: str | None) -> str:
    """A stable, non-reversible tag for a user id or UPN (case-insensitive)."""
    if not identifier:
        return "-"
    return hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:16]


def redact_url(url: str | None) -> str:
    """Scheme and host only: a join URL is a bearer credential for the meeting."""
    if not url:
        return "-"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    return f"{parts.scheme}://{parts.hostname}/…" if parts.hostname else "<redacted>"

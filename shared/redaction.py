"""Keep identities out of telemetry: users are logged as a hash."""

from __future__ import annotations

import hashlib


def hash_user(identifier: str | None) -> str:
    """A stable, non-reversible tag for a user id or UPN (case-insensitive)."""
    if not identifier:
        return "-"
    return hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:16]

"""Keep identities out of telemetry: users and tenants are logged as a hash."""

from __future__ import annotations

import hashlib


def hash_user(identifier: str | None) -> str:
    """A stable, non-reversible tag for a user id or UPN (case-insensitive)."""
    if not identifier:
        return "-"
    return hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:16]


def hash_tenant(tenant_id: str | None) -> str:
    """A tenant in telemetry: the same stable hash, so a customer's tenant id is not in every log line."""
    return hash_user(tenant_id)

"""Identifiers the app recognises: Entra object ids (GUIDs) and user principal names."""

from __future__ import annotations

import re

# Kept as text too: the OpenAPI document states the same rule to clients.
GUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GUID = re.compile(rf"^{GUID_PATTERN}$")
_UPN = re.compile(r"^[^\s@/\\]+@[^\s@/\\]+\.[^\s@/\\]+$")


def is_guid(value: str) -> bool:
    """True for a GUID in its 8-4-4-4-12 hex form (either case)."""
    return _GUID.match(value) is not None


def is_upn(value: str) -> bool:
    """True for something shaped like a user principal name (`name@domain.tld`, no spaces or slashes)."""
    return _UPN.match(value) is not None

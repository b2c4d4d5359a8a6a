"""Field rules shared by every way a request reaches the app (queue events, the HTTP twin, the connect page).

Each failure is an InvalidEventError naming the field, so a queue message is rejected and an HTTP caller
gets a 400 with the same words.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from shared.common.clock import parse_timestamp
from shared.common.ids import is_guid, is_upn
from shared.exceptions import InvalidEventError

MAX_ID = 256
MAX_URL = 2048


def required_text(data: dict[str, Any], field: str, limit: int = MAX_ID) -> str:
    """Return a required non-empty string field, or raise InvalidEventError naming it."""
    value = optional_text(data, field, limit)
    if value is None:
        raise InvalidEventError(f"{field!r} is required")
    return value


def optional_text(data: dict[str, Any], field: str, limit: int = MAX_ID) -> str | None:
    """Return an optional string field stripped, None when absent or empty."""
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"{field!r} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise InvalidEventError(f"{field!r} is longer than {limit} characters")
    if any(ch in value for ch in "\r\n\t\x00"):
        raise InvalidEventError(f"{field!r} contains control characters")
    return value or None


def check_organizer(value: str, field: str = "organizer") -> str:
    """Accept an Entra object id (GUID) or a UPN; raise InvalidEventError otherwise."""
    if is_guid(value) or is_upn(value):
        return value
    raise InvalidEventError(f"{field!r} must be an Entra object id (GUID) or a user principal name")


def optional_guid(data: dict[str, Any], field: str) -> str | None:
    """An optional GUID field (a tenant id), lower-cased; InvalidEventError naming it when it is not one."""
    value = optional_text(data, field)
    if value is None:
        return None
    if not is_guid(value):
        raise InvalidEventError(f"{field!r} must be a tenant id (GUID)")
    return value.lower()


def check_path_segment(field: str, value: str) -> str:
    """Refuse `.` and `..`: quoted or not, they change the request path of the Graph call they go into."""
    if value in (".", ".."):
        raise InvalidEventError(f"{field!r} {value!r} is not an id")
    return value


def check_https_url(field: str, value: str, *, allow_http: bool = False) -> str:
    """Accept an absolute https URL (or http where allowed); raise InvalidEventError otherwise."""
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise InvalidEventError(f"{field!r} is not a URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not host:
        raise InvalidEventError(f"{field!r} must be an absolute {' or '.join(schemes)} URL")
    return value


def optional_timestamp(value: Any, field: str) -> datetime | None:
    """An optional ISO 8601 timestamp; raise InvalidEventError naming the field when it is not one."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"{field!r} must be an ISO 8601 timestamp")
    try:
        return parse_timestamp(value)
    except ValueError:
        raise InvalidEventError(f"{field!r} {value!r} is not an ISO 8601 timestamp") from None


def optional_offset_timestamp(data: dict[str, Any], field: str) -> datetime | None:
    """An optional ISO 8601 timestamp that must carry its UTC offset (a naive time names no instant)."""
    value = optional_timestamp(data.get(field), field)
    if value is not None and value.utcoffset() is None:
        raise InvalidEventError(f"{field!r} must carry a UTC offset (e.g. 2026-11-21T09:00:00+01:00 or ...Z)")
    return value


def optional_integer(data: dict[str, Any], field: str, *, low: int, high: int) -> int | None:
    """An optional whole number within [low, high]; raise InvalidEventError naming the field otherwise."""
    value = data.get(field)
    if value is None:
        return None
    # bool is an int in Python, and 3.0 is a float in JSON: neither is a whole number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEventError(f"{field!r} must be a whole number")
    if not low <= value <= high:
        raise InvalidEventError(f"{field!r} must be between {low} and {high}")
    return value

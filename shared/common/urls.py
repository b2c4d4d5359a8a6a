"""The one rule for URLs the app is configured with or told to call: https, or plain http to loopback in development."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """True for `localhost` (with or without the root dot) and loopback IP literals (`[::1]` too); no DNS."""
    name = host.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def is_allowed_url(url: str, *, development: bool) -> bool:
    """https with a host; or http to a loopback host when `development` (the local stack)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme == "https" and host:
        return True
    return parts.scheme == "http" and development and is_loopback_host(host or "")


def host_of(url: str) -> str:
    """The lower-cased host name of a URL, or '' when it has none or cannot be parsed."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""

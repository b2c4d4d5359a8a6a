"""The one TLS context rule for every outbound HTTPS client (Graph, webhooks, the identity platform's keys)."""

from __future__ import annotations

import ssl
from pathlib import Path


def ssl_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """The system's trusted roots, plus `ca_bundle` (the local stack's CA) when given.

    Added to, not replacing, the system roots: SSL_CERT_FILE would drop real Graph's and Entra's CAs.
    """
    context = ssl.create_default_context()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context

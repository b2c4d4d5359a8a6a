"""One TLS context rule: the system's roots, plus the local stack's CA when configured."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from shared.common.tls import ssl_context

pytestmark = pytest.mark.unit


def test_system_roots_only_by_default():
    context = ssl_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_extra_ca_is_added_not_substituted(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    base = len(ssl_context(None).get_ca_certs())
    context = ssl_context(pem)
    assert len(context.get_ca_certs()) == base + 1
    assert context.verify_mode == ssl.CERT_REQUIRED

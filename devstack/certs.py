"""Test TLS material for the local emulators (a private CA and a loopback server certificate)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class CertPaths:
    """Locations of the CA bundle and the server certificate/key (PEM)."""

    ca_pem: Path
    server_cert_pem: Path
    server_key_pem: Path


def ensure_certs(state_dir: Path | str) -> CertPaths:
    """Create (or reuse) a CA and a server certificate for 127.0.0.1, localhost and ::1."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(state / "ca.pem", state / "server.pem", state / "server-key.pem")
    if all(p.is_file() and p.stat().st_size > 0 for p in (paths.ca_pem, paths.server_cert_pem,
                                                          paths.server_key_pem)):
        return paths
    ca = trustme.CA(organization_name="devstack local CA")
    server = ca.issue_cert(*SERVER_NAMES)
    # Write to temp names and rename so a concurrent reader never sees half a key.
    _atomic_write(paths.ca_pem, ca.cert_pem.bytes())
    _atomic_write(paths.server_cert_pem, b"".join(b.bytes() for b in server.cert_chain_pems))
    _atomic_write(paths.server_key_pem, server.private_key_pem.bytes(), mode=0o600)
    return paths


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)

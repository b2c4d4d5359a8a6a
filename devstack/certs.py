"""Test TLS material for the local emulators (a private CA and a loopback server certificate), and the app
registration's certificate credential (a key pair whose certificate the Entra emulator registers on the app)."""

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


APP_CREDENTIAL_FILE = "app-credential.pem"


def ensure_app_credential(state_dir: Path | str) -> Path:
    """Create (or reuse) the app's certificate credential: private key and certificate in one PEM file, the
    form a Key Vault certificate's secret has with content type application/x-pem-file."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    path = state / APP_CREDENTIAL_FILE
    if path.is_file() and path.stat().st_size > 0:
        return path
    # RSA: Entra's certificate credentials are RSA keys (client assertions signed RS256 or PS256).
    leaf = trustme.CA(organization_name="devstack app credential", key_type=trustme.KeyType.RSA).issue_cert(
        "va-join-links.local", key_type=trustme.KeyType.RSA)
    _atomic_write(path, leaf.private_key_pem.bytes() + leaf.cert_chain_pems[0].bytes(), mode=0o600)
    return path


def public_certificate(credential_pem: str) -> str:
    """The certificate (public) part of a key-and-certificate PEM."""
    start = credential_pem.index("-----BEGIN CERTIFICATE-----")
    end = credential_pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return credential_pem[start:end] + "\n"


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)

"""Client assertions (RFC 7523 `private_key_jwt`): an app proving itself with a certificate, or with a token
from a trusted issuer through a federated identity credential (the app's own managed identity).

Certificate: a JWT the app signs with its private key, `iss` and `sub` its client id, `aud` the token endpoint,
its header naming the certificate (`x5t` SHA-1 or `x5t#S256` SHA-256 thumbprint). The app registration holds the
public certificate (`certificates`: PEM).
Federated: a token another issuer signed (here the emulator's managed-identity endpoint), matched against the
app registration's `federated_identity_credentials` by issuer, subject and audience, as Entra does.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devstack.entra.errors import EntraError

if TYPE_CHECKING:
    from devstack.entra.emulator import EntraEmulator

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Federated credentials name the issuer with this placeholder in the seed: the emulator's own base URL.
ISSUER_PLACEHOLDER = "{entra}"


def _invalid(code: int, description: str) -> EntraError:
    return EntraError(401, "invalid_client", code, description)


def _thumbprints(cert_pem: str) -> tuple[str, str]:
    """(x5t, x5t#S256) of a PEM certificate, base64url as JWS headers carry them."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())

    def encode(digest: bytes) -> str:
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    return encode(cert.fingerprint(hashes.SHA1())), encode(cert.fingerprint(hashes.SHA256()))  # noqa: S303


def verify_client_assertion(emu: EntraEmulator, client: Mapping[str, Any], assertion: str,
                            token_endpoint: str) -> str:
    """Check an app's client assertion; returns how it proved itself (`certificate` or `federated`)."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _invalid(50027, "JWT token is invalid or malformed.") from None
    if claims.get("iss") == client["client_id"]:
        _verify_certificate_assertion(client, assertion, header, claims, token_endpoint)
        return "certificate"
    _verify_federated_assertion(emu, client, assertion, claims)
    return "federated"


def _verify_certificate_assertion(client: Mapping[str, Any], assertion: str, header: Mapping[str, Any],
                                  claims: Mapping[str, Any], token_endpoint: str) -> None:
    # MSAL keeps base64 padding on thumbprints (RFC 7515 leaves it out); Entra accepts both.
    wanted_sha1, wanted_sha256 = (str(header.get(name) or "").rstrip("=") or None for name in ("x5t", "x5t#S256"))
    certificate = None
    for pem in client.get("certificates", []):
        sha1, sha256 = _thumbprints(pem)
        if wanted_sha1 == sha1 or wanted_sha256 == sha256:
            certificate = x509.load_pem_x509_certificate(pem.encode())
            break
    if certificate is None:
        raise _invalid(700027, f"The certificate with identifier used to sign the client assertion is not "
                               f"registered on application. [Reason - The key was not found., Thumbprint of key "
                               f"used by client: '{wanted_sha1 or wanted_sha256}', Please visit the Azure Portal, "
                               f"Graph Explorer or directly use MS Graph to see configured keys for app Id "
                               f"'{client['client_id']}'.]")
    if claims.get("sub") != client["client_id"]:
        raise _invalid(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
    try:
        jwt.decode(assertion, certificate.public_key(), algorithms=["RS256", "PS256"], audience=token_endpoint,
                   options={"require": ["exp", "aud", "iss", "sub"]})
    except jwt.ExpiredSignatureError:
        raise _invalid(700024, "Client assertion is not within its valid time range.") from None
    except jwt.InvalidAudienceError:
        # The audience must be this tenant's token endpoint, the one the assertion was sent to.
        raise _invalid(50027, "JWT token is invalid or malformed.") from None
    except jwt.PyJWTError:
        raise _invalid(700027, "Client assertion failed signature validation.") from None


def _verify_federated_assertion(emu: EntraEmulator, client: Mapping[str, Any], assertion: str,
                                claims: Mapping[str, Any]) -> None:
    issuer, subject = str(claims.get("iss", "")), str(claims.get("sub", ""))
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
    matched = [fic for fic in client.get("federated_identity_credentials", [])
               if fic["issuer"].replace(ISSUER_PLACEHOLDER, emu.base) == issuer and fic["subject"] == subject
               and set(fic.get("audiences", [])) & set(audiences)]
    if not matched:
        raise _invalid(70021, f"No matching federated identity record found for presented assertion. Assertion "
                              f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: "
                              f"'{','.join(audiences)}'.")
    if not emu.signed_here(assertion):
        # Only this emulator's own issuer (its managed identities) is trusted; its key verifies the token.
        raise _invalid(700027, "Client assertion failed signature validation.")
    try:
        jwt.decode(assertion, emu.public_key, algorithms=["RS256"], audience=audiences, issuer=issuer,
                   options={"require": ["exp", "iss", "sub", "aud"]})
    except jwt.ExpiredSignatureError:
        raise _invalid(700024, "Client assertion is not within its valid time range.") from None
    except jwt.PyJWTError:
        raise _invalid(700027, "Client assertion failed signature validation.") from None

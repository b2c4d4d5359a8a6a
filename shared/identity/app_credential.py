"""The app's own credential toward Entra (ENTRA_APP_CREDENTIAL), for the delegated flows that need it.

Acting for organizers is still delegated: the credential only proves which app redeems an authorization code,
refreshes a refresh token or exchanges a bearer token On-Behalf-Of. Three kinds:
  client_secret  ENTRA_CLIENT_SECRET.
  certificate    ENTRA_CLIENT_CERTIFICATE: PEM (key and certificate) or base64 PKCS#12 (a Key Vault certificate's
                 secret); MSAL signs a client assertion with it.
  federated      No secret anywhere: the app's managed identity gets a token for api://AzureADTokenExchange, and
                 that token is the client assertion a federated identity credential on the app registration trusts.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

from shared.exceptions import SettingsError, TokenServiceUnavailableError
from shared.settings import Settings

# The audience a managed identity's token has when it is an app's federated credential (public cloud).
TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"  # noqa: S105 - an audience, not a secret


class ManagedIdentityAssertion:
    """A client assertion source for MSAL: the app's managed-identity token for the token exchange audience.

    azure-identity's ManagedIdentityCredential finds the platform's endpoint itself (IDENTITY_ENDPOINT and
    IDENTITY_HEADER on App Service and Functions) and caches the token until shortly before it expires, so
    MSAL may call this on every token request.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._credential: Any = None
        self._lock = threading.Lock()
        self.requests = 0

    def _get_credential(self) -> Any:
        with self._lock:
            if self._credential is None:
                from azure.identity import ManagedIdentityCredential

                ca = self._settings.tls_ca_bundle
                self._credential = ManagedIdentityCredential(
                    client_id=self._settings.managed_identity_client_id,
                    connection_verify=str(ca) if ca else True)
            return self._credential

    def __call__(self) -> str:
        """The current assertion (a managed-identity access token)."""
        from azure.core.exceptions import AzureError

        self.requests += 1
        try:
            return str(self._get_credential().get_token(TOKEN_EXCHANGE_SCOPE).token)
        except AzureError as exc:
            # Transient on purpose: a platform hiccup must not reject events for good. A managed identity that
            # is missing or not trusted by the app registration shows in this message and in every retry.
            first = (str(exc).splitlines() or [""])[0][:240]
            raise TokenServiceUnavailableError(
                f"the app's managed identity gave no token for its federated credential ({type(exc).__name__}: "
                f"{first}); ENTRA_APP_CREDENTIAL=federated needs the identity (ENTRA_MANAGED_IDENTITY_CLIENT_ID) "
                "assigned to the app and trusted by the app registration") from None


def load_certificate(value: str) -> tuple[str, str]:
    """(private key PEM, certificate PEM) from ENTRA_CLIENT_CERTIFICATE (PEM, or base64 PKCS#12 without password)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    text = value.strip()
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(_pem_block(text, "PRIVATE KEY"), password=None)
            cert = x509.load_pem_x509_certificate(_pem_block(text, "CERTIFICATE"))
        else:
            from cryptography.hazmat.primitives.serialization import pkcs12

            loaded_key, loaded_cert, _ = pkcs12.load_key_and_certificates(base64.b64decode(text), None)
            if loaded_key is None or loaded_cert is None:
                raise ValueError("the PKCS#12 holds no private key or no certificate")
            key, cert = loaded_key, loaded_cert
    except (ValueError, TypeError) as exc:
        raise SettingsError([f"ENTRA_CLIENT_CERTIFICATE=<redacted> is invalid: {type(exc).__name__}: the value "
                             "must hold an unencrypted private key and its certificate"]) from None
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


def _pem_block(text: str, label: str) -> bytes:
    """The first PEM block whose label ends with `label` (PRIVATE KEY matches RSA PRIVATE KEY too)."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if line.startswith("-----BEGIN ") and line.rstrip("-").endswith(label):
            end = next(i for i in range(start, len(lines)) if lines[i].startswith("-----END "))
            return ("\n".join(lines[start:end + 1]) + "\n").encode()
    raise ValueError(f"no {label} block")


class AppCredential:
    """The configured credential in the forms MSAL and azure-identity take, built once per worker."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._certificate: tuple[str, str] | None = None
        self.assertion = ManagedIdentityAssertion(settings) if settings.app_credential == "federated" else None

    @property
    def kind(self) -> str:
        """client_secret, certificate or federated."""
        return self._settings.app_credential

    def _key_and_certificate(self) -> tuple[str, str]:
        if self._certificate is None:
            self._certificate = load_certificate(self._settings.client_certificate or "")
        return self._certificate

    def for_msal(self) -> str | dict[str, Any]:
        """`client_credential` for a ConfidentialClientApplication."""
        if self.assertion is not None:
            return {"client_assertion": self.assertion}
        if self.kind == "certificate":
            key, cert = self._key_and_certificate()
            # With the certificate, MSAL signs PS256 and names it by its SHA-256 thumbprint.
            return {"private_key": key, "public_certificate": cert}
        return self._settings.client_secret

    def for_azure_identity(self) -> dict[str, Any]:
        """The credential keyword of azure-identity's OnBehalfOfCredential."""
        if self.assertion is not None:
            assertion: Callable[[], str] = self.assertion
            return {"client_assertion_func": assertion}
        if self.kind == "certificate":
            key, cert = self._key_and_certificate()
            return {"client_certificate": (key + cert).encode()}
        return {"client_secret": self._settings.client_secret}

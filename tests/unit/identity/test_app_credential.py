"""The app's credential toward Entra in the forms MSAL and azure-identity take; certificates as PEM or PKCS#12."""

import base64

import pytest
import trustme
from azure.core.exceptions import ClientAuthenticationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from shared.exceptions import SettingsError, TokenServiceUnavailableError
from shared.identity.app_credential import TOKEN_EXCHANGE_SCOPE, AppCredential, load_certificate
from shared.settings import load_settings
from tests.sample_settings import sample_env

pytestmark = pytest.mark.unit
LEAF = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert("app.local", key_type=trustme.KeyType.RSA)
KEY_PEM = LEAF.private_key_pem.bytes().decode()
CERT_PEM = LEAF.cert_chain_pems[0].bytes().decode()


def settings(**values):
    return load_settings(sample_env(**values))


def test_a_client_secret_goes_to_msal_and_azure_identity_as_is():
    credential = AppCredential(settings(ENTRA_APP_CREDENTIAL="client_secret", ENTRA_CLIENT_SECRET="s3cret-value"))
    assert credential.for_msal() == "s3cret-value"
    assert credential.for_azure_identity() == {"client_secret": "s3cret-value"}


@pytest.mark.parametrize("form", ["pem", "pkcs12"])
def test_a_certificate_is_read_as_pem_or_as_a_key_vault_pkcs12(form):
    if form == "pem":
        value = KEY_PEM + CERT_PEM
    else:
        key = serialization.load_pem_private_key(KEY_PEM.encode(), None)
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(CERT_PEM.encode())
        value = base64.b64encode(pkcs12.serialize_key_and_certificates(
            b"app", key, cert, None, serialization.NoEncryption())).decode()
    credential = AppCredential(settings(ENTRA_APP_CREDENTIAL="certificate", ENTRA_CLIENT_CERTIFICATE=value))
    msal_form = credential.for_msal()
    assert isinstance(msal_form, dict) and msal_form["public_certificate"].strip() == CERT_PEM.strip()
    assert "PRIVATE KEY" in msal_form["private_key"]
    assert b"BEGIN CERTIFICATE" in credential.for_azure_identity()["client_certificate"]


def test_a_certificate_without_its_key_is_a_settings_error_that_shows_nothing():
    with pytest.raises(SettingsError) as caught:
        load_certificate(CERT_PEM + "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    assert "ENTRA_CLIENT_CERTIFICATE=<redacted>" in str(caught.value) and "bm90" not in str(caught.value)


class FakeManagedIdentity:
    def __init__(self, answer):
        self.answer, self.scopes = answer, []

    def get_token(self, *scopes):
        self.scopes.append(scopes)
        if isinstance(self.answer, Exception):
            raise self.answer
        from azure.core.credentials import AccessToken

        return AccessToken(self.answer, 0)


def test_federated_hands_msal_a_callable_that_returns_the_managed_identity_token():
    credential = AppCredential(settings())
    fake = FakeManagedIdentity("mi-token")
    credential.assertion._credential = fake
    assertion = credential.for_msal()["client_assertion"]
    assert assertion() == "mi-token" and fake.scopes == [(TOKEN_EXCHANGE_SCOPE,)]
    assert credential.for_azure_identity()["client_assertion_func"]() == "mi-token"


def test_a_managed_identity_that_gives_no_token_is_transient_and_says_what_is_needed():
    credential = AppCredential(settings())
    credential.assertion._credential = FakeManagedIdentity(ClientAuthenticationError("no identity here"))
    with pytest.raises(TokenServiceUnavailableError, match="ENTRA_MANAGED_IDENTITY_CLIENT_ID"):
        credential.for_msal()["client_assertion"]()

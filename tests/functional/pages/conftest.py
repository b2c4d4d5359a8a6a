"""The pages' fixtures: a fake vault and identity platform behind the worker's real services, and a bearer
validator whose keys are the tests' own."""

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.identity.bearer import BearerValidator
from shared.identity.vault_acquirer import VaultTokenAcquirer
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.testing.vault import InMemoryTokenVault
from tests.auth_fakes import SCHEDULER, TENANT, FakeIdentityPlatform, FakeMsalClients
from tests.fakes import FakeGraph, no_sleep

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def world(function_app_module, monkeypatch):
    """Fake vault and identity platform behind the worker's real services."""
    services = function_app_module.services
    idp, vault = FakeIdentityPlatform(), InMemoryTokenVault(TENANT)
    clients = FakeMsalClients(idp)
    monkeypatch.setitem(services.__dict__, "vault", vault)
    monkeypatch.setitem(services.__dict__, "msal_clients", clients)
    monkeypatch.setitem(services.__dict__, "vault_acquirer",
                        VaultTokenAcquirer(services.settings, vault, clients, rotation_grace_seconds=0))
    return idp, vault


class Jwks:
    def get_signing_key(self, kid):
        if kid != "k1":
            raise jwt.PyJWKClientError("unknown kid")
        return jwt.PyJWK.from_dict(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())))


@pytest.fixture
def bearer_world(function_app_module, monkeypatch):
    services = function_app_module.services
    fake = FakeGraph({(SCHEDULER["oid"], "m1"): "https://visit.teams.microsoft.com/x"})
    monkeypatch.setitem(services.__dict__, "resolver", JoinUrlResolver(fake, inline_throttle_budget=0,
                                                                      sleep=no_sleep))
    monkeypatch.setitem(services.__dict__, "bearer", BearerValidator(services.settings, jwks_client=Jwks()))
    return services.settings

"""Delegated credentials: caching, single flight, app-only detection, MSAL error mapping."""

import asyncio
import base64
import json

import pytest

from shared.exceptions import AppOnlyTokenError, OrganizerNotConnectedError, TokenServiceUnavailableError
from shared.identity.dev_password import token_from_result
from shared.identity.tokens import DelegatedCredentials, ensure_delegated
from tests.fakes import FakeAcquirer

pytestmark = pytest.mark.unit


def jwt(claims):
    def part(doc):
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256'})}.{part(claims)}.sig"


async def test_one_thousand_concurrent_calls_make_one_token_request():
    # GIVEN a cold cache WHEN 1,000 invocations for one organizer ask at once THEN one request is made
    acquirer = FakeAcquirer()
    credentials = DelegatedCredentials(acquirer)
    tokens = await asyncio.gather(*(credentials.token_for("a@contoso.test") for _ in range(1000)))
    assert acquirer.calls == 1 and len(set(tokens)) == 1


async def test_tokens_are_refreshed_shortly_before_expiry_and_per_scope_set():
    now = [1000.0]
    acquirer = FakeAcquirer(lifetime=600)
    credentials = DelegatedCredentials(acquirer, clock=lambda: now[0])
    acquirer.lifetime = 600
    await credentials.token_for("a@contoso.test")
    await credentials.token_for("A@contoso.test")  # organizer keys are case-insensitive
    await credentials.token_for("a@contoso.test", ["https://graph.microsoft.com/OnlineMeetings.Read"])
    assert acquirer.calls == 2
    credentials.invalidate("a@contoso.test")
    await credentials.token_for("a@contoso.test")
    assert acquirer.calls == 3


async def test_app_only_token_is_refused_before_graph_sees_it():
    credentials = DelegatedCredentials(FakeAcquirer(token=jwt({"roles": ["OnlineMeetings.Read.All"],
                                                                "idtyp": "app"})))
    with pytest.raises(AppOnlyTokenError) as caught:
        await credentials.token_for("a@contoso.test")
    assert "delegated permissions only" in caught.value.detail
    ensure_delegated(jwt({"scp": "VirtualAppointment.Read"}))


@pytest.mark.parametrize(("answer", "error"), [
    ({"error": "invalid_grant", "error_description": "AADSTS50126"}, OrganizerNotConnectedError),
    ({"error": "interaction_required"}, OrganizerNotConnectedError),
    ({"error": "temporarily_unavailable"}, TokenServiceUnavailableError),
])
def test_msal_errors_are_classified(answer, error):
    with pytest.raises(error):
        token_from_result(answer, "a@contoso.test")

"""Delegated credentials: caching, single flight, app-only detection, MSAL error mapping."""

import asyncio
import base64
import json
import time

import pytest

from shared.exceptions import AppOnlyTokenError, OrganizerNotConnectedError, TokenServiceUnavailableError
from shared.identity.dev_password import token_from_result
from shared.identity.tokens import (
    SCOPE_JOIN_URL,
    SCOPE_MEETING_LOOKUP,
    DelegatedCredentials,
    OrganizerIdentity,
    ensure_delegated,
)
from tests.fakes import TENANT, FakeAcquirer

FABRIKAM = "3f9a7c21-6b4d-4e8a-a1c5-9d2e8f7b6a40"
ALICE = OrganizerIdentity(TENANT, "0a1b2c3d-0000-4000-8000-00000000000a")
BOB = OrganizerIdentity(FABRIKAM, "0b1b2c3d-0000-4000-8000-00000000000b")
PEOPLE = {"alice@contoso.test": ALICE, ALICE.oid: ALICE, "bob@fabrikam.test": BOB, BOB.oid: BOB}

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


async def test_one_token_per_organizer_whatever_the_spelling_refreshed_shortly_before_expiry():
    now = [time.time()]  # the fake acquirer's tokens expire on the real clock
    acquirer = FakeAcquirer(lifetime=600, people=PEOPLE)
    credentials = DelegatedCredentials(acquirer, clock=lambda: now[0])
    first = await credentials.token_for("alice@contoso.test")
    assert await credentials.token_for("ALICE@contoso.test") == first  # spellings are case-insensitive
    assert await credentials.token_for(ALICE.oid, tenant=TENANT) == first  # and name one identity
    assert acquirer.calls == 1
    now[0] += 301  # within five minutes of expiry: renewed
    assert await credentials.token_for("alice@contoso.test") != first and acquirer.calls == 2
    credentials.invalidate("alice@contoso.test")
    await credentials.token_for(ALICE.oid)
    assert acquirer.calls == 3


async def test_not_per_scope_one_token_carries_every_scope_asked_for():
    acquirer = FakeAcquirer(people=PEOPLE)
    credentials = DelegatedCredentials(acquirer)
    await credentials.token_for("alice@contoso.test", SCOPE_JOIN_URL)
    both = await credentials.token_for("alice@contoso.test", SCOPE_MEETING_LOOKUP)
    # The fake grants what was asked: the second request asks for both scopes, and that token serves both after.
    assert acquirer.scopes == [SCOPE_JOIN_URL, tuple(sorted(SCOPE_JOIN_URL + SCOPE_MEETING_LOOKUP))]
    for name, scopes in ((ALICE.oid, SCOPE_MEETING_LOOKUP), ("alice@contoso.test", SCOPE_JOIN_URL)):
        assert await credentials.token_for(name, scopes) == both
    assert acquirer.calls == 2


async def test_a_token_of_one_tenant_is_never_used_for_another():
    acquirer = FakeAcquirer(people=PEOPLE)
    credentials = DelegatedCredentials(acquirer)
    alice, bob = await credentials.token_for("alice@contoso.test"), await credentials.token_for("bob@fabrikam.test")
    assert str(ALICE) in alice and str(BOB) in bob
    with pytest.raises(OrganizerNotConnectedError):
        await credentials.token_for("alice@contoso.test", tenant=FABRIKAM)
    assert await credentials.identify("bob@fabrikam.test", FABRIKAM) == BOB


async def test_how_a_spelling_resolves_is_checked_again_after_a_while():
    now = [1000.0]
    acquirer = FakeAcquirer(people=PEOPLE)
    credentials = DelegatedCredentials(acquirer, clock=lambda: now[0])
    await credentials.identify("alice@contoso.test")
    await credentials.identify("alice@contoso.test")
    now[0] += 901
    await credentials.identify("alice@contoso.test")
    assert acquirer.identified == 2


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

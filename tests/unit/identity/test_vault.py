"""Token vault, vault acquirer and keep-alive against an in-memory vault and a strict-rotation fake platform."""

import asyncio
import dataclasses
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.exceptions import (
    MissingScopeError,
    OrganizerNotConnectedError,
    PermanentError,
    TokenServiceUnavailableError,
    VaultUnavailableError,
)
from shared.identity.keepalive import KeepAliveOutcome, run_keepalive
from shared.identity.tokens import (
    SCOPE_JOIN_URL,
    SCOPE_MEETING_LOOKUP,
    SCOPE_MEETING_WRITE,
    DelegatedCredentials,
    OrganizerIdentity,
)
from shared.identity.vault import ConnectionStatus, VaultEntry
from shared.identity.vault_acquirer import VaultTokenAcquirer
from shared.redaction import hash_user
from shared.services import build_acquirer
from shared.settings import load_settings
from shared.testing.vault import InMemoryTokenVault
from tests.auth_fakes import (
    FABRIKAM_SCHEDULER,
    OTHER_TENANT,
    SCHEDULER,
    TENANT,
    FakeIdentityPlatform,
    FakeMsalClients,
    connected_entry,
    error,
    expire_access_token,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
# The organizer as the acquirer knows them once identified: tenant and object id.
ID = OrganizerIdentity(TENANT, SCHEDULER["oid"])


@pytest.fixture(scope="module")
def settings():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return load_settings(values | {"CREDENTIAL_MODE": "vault"})


@pytest.fixture
def idp():
    return FakeIdentityPlatform()


@pytest.fixture
def vault():
    return InMemoryTokenVault(TENANT)


def acquirer(settings, vault, idp, **kwargs):
    kwargs.setdefault("rotation_grace_seconds", 0.5)
    return VaultTokenAcquirer(settings, vault, FakeMsalClients(idp), **kwargs)


def stored(vault, idp, **fields):
    return vault.save(connected_entry(idp, **fields))


# --- the vault itself (its storage contract: tests/contract/test_token_vaults.py) -------------------

def test_entries_from_newer_versions_still_load():
    text = json.dumps({"version": 2, "oid": "o", "upn": "u@x.test", "display_name": "U", "cache": "{}",
                       "future_field": 1})
    assert VaultEntry.from_json(text, '"e"').upn == "u@x.test"


# --- the acquirer ---------------------------------------------------------------------------------------

def test_token_in_the_stored_cache_is_used_without_a_request_or_a_write(settings, vault, idp):
    stored(vault, idp)
    writes, requests = vault.writes, idp.requests
    token = acquirer(settings, vault, idp).acquire(ID, list(SCOPE_JOIN_URL))
    assert token.token.startswith("at-") and vault.writes == writes and idp.requests == requests


def test_a_token_graph_refused_is_not_handed_out_again(settings, vault, idp):
    # DelegatedCredentials asks again before expiry only after Graph refused the token (invalidate)
    stored(vault, idp)
    worker = acquirer(settings, vault, idp)
    first = worker.acquire(ID, list(SCOPE_JOIN_URL))
    second = worker.acquire(ID, list(SCOPE_JOIN_URL))
    assert second.token != first.token and idp.is_valid(vault.get(SCHEDULER["upn"]).cache)


def test_refresh_stores_the_rotated_refresh_token_and_health(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache), last_success_at=None))
    acquirer(settings, vault, idp).acquire(ID, list(SCOPE_JOIN_URL))
    after = vault.get(SCHEDULER["oid"])
    assert idp.is_valid(after.cache) and not idp.is_valid(entry.cache)
    assert after.last_success_at and after.last_refreshed_at and after.consecutive_failures == 0


def test_missing_entry_says_how_to_reconnect(settings, vault, idp):
    with pytest.raises(OrganizerNotConnectedError) as caught:
        acquirer(settings, vault, idp).identify("nobody@contoso.test", None)
    detail = caught.value.detail
    assert "/api/auth/connect" in detail and "connect-device" in detail
    assert "nobody@" not in detail and hash_user("nobody@contoso.test") in detail


def test_refused_refresh_marks_the_entry_and_later_calls_fail_fast(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("interaction_required", 50076, "MFA required"))
    with pytest.raises(OrganizerNotConnectedError):
        acquirer(settings, vault, idp).acquire(ID, list(SCOPE_JOIN_URL))
    after = vault.get(SCHEDULER["upn"])
    assert after.status == ConnectionStatus.NEEDS_RECONNECT and after.consecutive_failures == 1
    assert "interaction_required" in after.last_error and "AADSTS50076" in after.last_error
    requests = idp.requests
    with pytest.raises(OrganizerNotConnectedError, match="needs_reconnect"):
        acquirer(settings, vault, idp).acquire(ID, list(SCOPE_JOIN_URL))
    assert idp.requests == requests


def test_revoked_grant_is_recorded_as_revoked(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("invalid_grant", 50173, "The provided grant has expired due to it being revoked"))
    with pytest.raises(OrganizerNotConnectedError):
        acquirer(settings, vault, idp).acquire(ID, list(SCOPE_JOIN_URL))
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.REVOKED


def test_transient_failure_is_transient_and_leaves_the_entry_alone(settings, vault, idp):
    entry = stored(vault, idp)
    entry = vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("temporarily_unavailable", 90001, "try later"))
    with pytest.raises(TokenServiceUnavailableError):
        acquirer(settings, vault, idp).acquire(ID, list(SCOPE_JOIN_URL))
    assert vault.get(SCHEDULER["upn"]).etag == entry.etag


def test_app_registration_problems_are_permanent_but_not_the_organizers_fault(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("invalid_client", 7000215, "Invalid client secret provided."))
    with pytest.raises(PermanentError) as caught:
        acquirer(settings, vault, idp).acquire(ID, list(SCOPE_JOIN_URL))
    assert caught.value.reason == "app_misconfigured"
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.CONNECTED


@pytest.mark.parametrize(("scopes", "name"), [(SCOPE_MEETING_LOOKUP, "OnlineMeetings.Read"),
                                              (SCOPE_MEETING_WRITE, "OnlineMeetings.ReadWrite")])
def test_missing_consent_for_an_optional_scope_is_missing_scope_and_keeps_the_connection(settings, vault, idp,
                                                                                        scopes, name):
    # GIVEN an organizer connected without consent for an optional scope
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    # Neither the organizer's full set of scopes nor the asked scope alone: consent is missing for it.
    idp.answers += [error("invalid_grant", 65001, "The user or administrator has not consented")] * 2
    # WHEN a token with that scope is needed THEN missing_scope names it and says how to grant it
    with pytest.raises(MissingScopeError, match=name) as raised:
        acquirer(settings, vault, idp).acquire(ID, list(scopes))
    assert raised.value.reason == "missing_scope" and "consent" in raised.value.detail
    assert "connect-device" in raised.value.detail
    # AND the connection itself stays healthy (join URLs keep working)
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.CONNECTED


class RacingVault(InMemoryTokenVault):
    """Makes the first `get` of each of two threads return before either writes (both read the same ETag).

    Its refresh lease never excludes anyone: these races are the ones the lease prevents, and they must still
    come out right when it cannot be held (storage unreachable, or a holder slower than its lease).
    """

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=5)
        self.armed = False
        self._seen: set[int] = set()

    def _lease(self, name, seconds):
        # Everyone "gets" the lease while armed: nobody is excluded, as if it could not be enforced.
        return f"racing-{threading.get_ident()}" if self.armed else super()._lease(name, seconds)

    def get(self, organizer, tenant=None):
        entry = super().get(organizer, tenant)
        me = threading.get_ident()
        if self.armed and me not in self._seen:
            self._seen.add(me)
            self.barrier.wait()
        return entry


def race(settings, vault, idp, **kwargs):
    """Two workers (own MSAL clients each) acquire for one organizer at the same moment."""
    workers = [acquirer(settings, vault, idp, **kwargs) for _ in range(2)]
    results, errors = [], []

    def run(worker):
        try:
            results.append(worker.acquire(ID, list(SCOPE_JOIN_URL)))
        except Exception as exc:
            errors.append(exc)

    vault.armed = True
    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    vault.armed = False
    return results, errors


def test_concurrent_refreshers_with_strict_rotation_keep_a_working_refresh_token(settings, idp):
    # GIVEN an expired access token and a platform on which a refresh token works once
    vault = RacingVault()
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    # WHEN two workers refresh at the same moment
    results, errors = race(settings, vault, idp)
    # THEN both get a token, and the stored refresh token is the live one (nothing lost, nobody disconnected)
    assert errors == [] and len(results) == 2
    after = vault.get(SCHEDULER["upn"])
    assert after.status == ConnectionStatus.CONNECTED and idp.is_valid(after.cache)


def test_concurrent_refreshers_when_both_refreshes_succeed_resolve_the_412(settings):
    idp = FakeIdentityPlatform(strict=False)
    vault = RacingVault()
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    results, errors = race(settings, vault, idp)
    assert errors == [] and len(results) == 2
    after = vault.get(SCHEDULER["upn"])
    assert after.status == ConnectionStatus.CONNECTED and idp.is_valid(after.cache)


def test_a_slow_refresher_overwrites_a_reconnect_mark_made_by_the_loser(settings, idp):
    # GIVEN the winner stores its rotated token only after the loser's grace period has run out
    vault = RacingVault()
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))

    def winner_is_slow(answer):
        if "error" not in answer:
            threading.Event().wait(0.3)

    idp.after_answer = winner_is_slow
    results, errors = race(settings, vault, idp, rotation_grace_seconds=0.0)
    # THEN the loser gives up (its refresh token was spent), but the winner's write repairs the entry
    assert len(results) == 1 and len(errors) == 1 and isinstance(errors[0], OrganizerNotConnectedError)
    after = vault.get(SCHEDULER["upn"])
    assert after.status == ConnectionStatus.CONNECTED and idp.is_valid(after.cache)


async def test_a_thousand_invocations_make_one_vault_acquire(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    requests = idp.requests
    credentials = DelegatedCredentials(acquirer(settings, vault, idp))
    tokens = await asyncio.gather(*(credentials.token_for(SCHEDULER["upn"]) for _ in range(1000)))
    assert len(set(tokens)) == 1 and credentials.requests == 1 and idp.requests - requests == 1


def test_every_refresh_goes_to_the_organizers_own_tenant(settings, vault, idp):
    entry = stored(vault, idp, user=FABRIKAM_SCHEDULER)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    clients = FakeMsalClients(idp)
    worker = VaultTokenAcquirer(settings, vault, clients, rotation_grace_seconds=0)
    identity = worker.identify("Scheduler@Fabrikam.test", None)
    assert identity == OrganizerIdentity(OTHER_TENANT, FABRIKAM_SCHEDULER["oid"])
    worker.acquire(identity, list(SCOPE_JOIN_URL))
    worker.refresh(identity)
    assert clients.tenants == [OTHER_TENANT, OTHER_TENANT]


def test_an_event_tenant_the_organizer_does_not_belong_to_is_refused(settings, vault, idp):
    stored(vault, idp)
    worker = acquirer(settings, vault, idp)
    with pytest.raises(OrganizerNotConnectedError, match="does not belong to the event's tenantId"):
        worker.identify(SCHEDULER["upn"], OTHER_TENANT)
    with pytest.raises(OrganizerNotConnectedError, match="not on ENTRA_ALLOWED_TENANTS"):
        worker.identify(SCHEDULER["upn"], "b2c4e6a8-0d1f-4a3b-8c5e-7f9a1b3d5e60")
    assert worker.identify(SCHEDULER["oid"].upper(), TENANT.upper()) == ID


async def test_one_token_per_organizer_however_events_spell_them_and_whatever_scope_they_need(settings, vault, idp):
    # GIVEN an organizer whose stored access token has expired
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    credentials = DelegatedCredentials(acquirer(settings, vault, idp))
    requests = idp.requests
    # WHEN events name them by UPN, by object id, in other cases, with and without their tenant, for a join URL
    # and for a joinWebUrl lookup
    tokens = {await credentials.token_for(name, scopes, tenant)
              for name in (SCHEDULER["upn"], SCHEDULER["oid"], "SCHEDULER@contoso.test")
              for scopes in (SCOPE_JOIN_URL, SCOPE_MEETING_LOOKUP) for tenant in (None, TENANT)}
    # THEN one token, one refresh
    assert len(tokens) == 1 and credentials.requests == 1 and idp.requests - requests == 1


def test_build_acquirer_knows_the_vault_mode(settings, vault):
    assert isinstance(build_acquirer(settings, vault=vault), VaultTokenAcquirer)


# --- keep-alive -----------------------------------------------------------------------------------------

def test_keepalive_refreshes_idle_entries_and_reports_each(settings, vault, idp, caplog):
    now = datetime.now(UTC)
    old = (now - timedelta(hours=80)).isoformat()
    stored(vault, idp, last_refreshed_at=old)
    stored(vault, idp, user={"oid": "8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b", "upn": "dr.adams@contoso.test",
                             "name": "Dr. Adams"})
    stored(vault, idp, user={"oid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "upn": "gone@contoso.test",
                             "name": "Gone"}, status=ConnectionStatus.NEEDS_RECONNECT)
    before = vault.get(SCHEDULER["upn"]).cache
    with caplog.at_level(logging.INFO, logger="shared.identity.keepalive"):
        report = run_keepalive(vault, acquirer(settings, vault, idp), idle_hours=72, now=now)
    outcomes = {o.organizer_hash: o.outcome for o in report.organizers}
    assert outcomes == {hash_user(SCHEDULER["oid"]): KeepAliveOutcome.REFRESHED,
                        hash_user("8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b"): KeepAliveOutcome.FRESH,
                        hash_user("1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"): KeepAliveOutcome.NEEDS_RECONNECT}
    after = vault.get(SCHEDULER["upn"])
    assert after.cache != before and idp.is_valid(after.cache) and not idp.is_valid(before)
    assert report.unhealthy == 1
    text = caplog.text
    assert "contoso.test" not in text and "at-" not in text
    per_organizer = [r for r in caplog.records
                     if r.name == "shared.identity.keepalive" and getattr(r, "organizer_hash", None)]
    assert len(per_organizer) == 3 and all(hasattr(r, "consecutive_failures") for r in per_organizer)


def test_keepalive_records_transient_failures_without_disconnecting(settings, vault, idp):
    now = datetime.now(UTC)
    stored(vault, idp, last_refreshed_at=(now - timedelta(days=5)).isoformat())
    idp.answers.append(error("temporarily_unavailable", 90001, "try later"))
    report = run_keepalive(vault, acquirer(settings, vault, idp), idle_hours=72, now=now)
    entry = vault.get(SCHEDULER["upn"])
    assert report.count(KeepAliveOutcome.FAILED) == 1
    assert entry.status == ConnectionStatus.CONNECTED and entry.consecutive_failures == 1
    assert "token_service_unavailable" in entry.last_error


def test_keepalive_marks_a_revoked_organizer(settings, vault, idp):
    now = datetime.now(UTC)
    stored(vault, idp, last_refreshed_at=(now - timedelta(days=5)).isoformat())
    idp.revoke(SCHEDULER["oid"])
    report = run_keepalive(vault, acquirer(settings, vault, idp), idle_hours=72, now=now)
    assert report.count(KeepAliveOutcome.NEEDS_RECONNECT) == 1
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.NEEDS_RECONNECT


# --- one refresh at a time, across instances ----------------------------------------------------------

def test_concurrent_refreshers_make_one_redeem_behind_the_refresh_lease(settings, idp):
    # GIVEN an expired access token, a single-use-refresh-token platform, and two instances (own MSAL clients)
    vault = InMemoryTokenVault()
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    requests = idp.requests
    start = threading.Barrier(2)
    results, errors = [], []

    def run():
        worker = acquirer(settings, vault, idp)
        start.wait()
        try:
            results.append(worker.acquire(ID, list(SCOPE_JOIN_URL)))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # THEN one redeems, the other waits for its lease and takes the token it stored: one request, no race
    assert errors == [] and len(results) == 2 and idp.requests - requests == 1
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.CONNECTED


class VaultThatCannotStore(InMemoryTokenVault):
    """Reads work; writes of organizer entries fail the way an unreachable storage account does (`failures`)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _write(self, name, text, *, etag=None, create=False):
        if name.startswith("organizers/") and self.failures > 0:
            self.failures -= 1
            raise VaultUnavailableError("token vault unreachable (ServiceRequestError)")
        return super()._write(name, text, etag=etag, create=create)


def test_a_refresh_token_redeemed_while_storage_is_down_is_stored_when_it_is_back(settings, idp):
    # GIVEN a strict platform (a redeemed refresh token is spent) and a vault that cannot store for a while
    vault = VaultThatCannotStore(failures=0)
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    vault.failures = 10**6
    worker = acquirer(settings, vault, idp, sleep=lambda seconds: None)
    # WHEN the refresh redeems the token but cannot store the new one
    token = worker.acquire(ID, list(SCOPE_JOIN_URL))
    # THEN the caller still gets its token, and the stored refresh token is now spent...
    assert token.token and not idp.is_valid(vault.get(SCHEDULER["upn"]).cache)
    # ...until storage answers again: the kept one is stored before the next refresh, nobody disconnected
    vault.failures = 0
    worker.refresh(ID)
    after = vault.get(SCHEDULER["upn"])
    assert after.status == ConnectionStatus.CONNECTED and idp.is_valid(after.cache)


def test_a_short_storage_pause_after_a_redeem_is_ridden_out_under_the_lease(settings, idp):
    vault = VaultThatCannotStore(failures=0)
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    vault.failures = 3
    slept = []
    acquirer(settings, vault, idp, sleep=slept.append).acquire(ID, list(SCOPE_JOIN_URL))
    after = vault.get(SCHEDULER["upn"])
    assert vault.failures == 0 and idp.is_valid(after.cache) and len(slept) == 3
@pytest.mark.parametrize(("overrides", "expected"), [
    ({"MEETING_MANAGEMENT": "false", "CLIENT_SMS": "false", "AUTH_CONNECT_LOOKUP_SCOPE": "false"},
     ["VirtualAppointment.Read"]),
    ({"MEETING_MANAGEMENT": "true", "CLIENT_SMS": "false", "AUTH_CONNECT_LOOKUP_SCOPE": "true"},
     ["VirtualAppointment.Read", "OnlineMeetings.Read", "OnlineMeetings.ReadWrite"]),
    ({"MEETING_MANAGEMENT": "true", "CLIENT_SMS": "true", "AUTH_CONNECT_LOOKUP_SCOPE": "false"},
     ["VirtualAppointment.Read", "OnlineMeetings.ReadWrite", "VirtualAppointmentNotification.Send"]),
])
def test_the_connect_page_and_device_code_ask_for_what_the_settings_turn_on(overrides, expected):
    from shared.identity.vault_acquirer import connect_scopes

    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    scopes = connect_scopes(load_settings(values | {"CREDENTIAL_MODE": "vault"} | overrides))
    assert [scope.rsplit("/", 1)[-1] for scope in scopes] == expected

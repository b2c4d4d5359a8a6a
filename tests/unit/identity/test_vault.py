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
)
from shared.identity.keepalive import KeepAliveOutcome, run_keepalive
from shared.identity.tokens import SCOPE_JOIN_URL, SCOPE_MEETING_LOOKUP, SCOPE_MEETING_WRITE, DelegatedCredentials
from shared.identity.vault import ConnectionStatus, VaultEntry
from shared.identity.vault_acquirer import VaultTokenAcquirer
from shared.redaction import hash_user
from shared.services import build_acquirer
from shared.settings import load_settings
from shared.testing.vault import InMemoryTokenVault
from tests.auth_fakes import (
    SCHEDULER,
    FakeIdentityPlatform,
    FakeMsalClients,
    connected_entry,
    error,
    expire_access_token,
)

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]


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
    return InMemoryTokenVault()


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
    token = acquirer(settings, vault, idp).acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    assert token.token.startswith("at-") and vault.writes == writes and idp.requests == requests


def test_a_token_graph_refused_is_not_handed_out_again(settings, vault, idp):
    # DelegatedCredentials asks again before expiry only after Graph refused the token (invalidate)
    stored(vault, idp)
    worker = acquirer(settings, vault, idp)
    first = worker.acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    second = worker.acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    assert second.token != first.token and idp.is_valid(vault.get(SCHEDULER["upn"]).cache)


def test_refresh_stores_the_rotated_refresh_token_and_health(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache), last_success_at=None))
    acquirer(settings, vault, idp).acquire(SCHEDULER["oid"], list(SCOPE_JOIN_URL))
    after = vault.get(SCHEDULER["oid"])
    assert idp.is_valid(after.cache) and not idp.is_valid(entry.cache)
    assert after.last_success_at and after.last_refreshed_at and after.consecutive_failures == 0


def test_missing_entry_says_how_to_reconnect(settings, vault, idp):
    with pytest.raises(OrganizerNotConnectedError) as caught:
        acquirer(settings, vault, idp).acquire("nobody@contoso.test", list(SCOPE_JOIN_URL))
    detail = caught.value.detail
    assert "/api/auth/connect" in detail and "connect-device" in detail
    assert "nobody@" not in detail and hash_user("nobody@contoso.test") in detail


def test_refused_refresh_marks_the_entry_and_later_calls_fail_fast(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("interaction_required", 50076, "MFA required"))
    with pytest.raises(OrganizerNotConnectedError):
        acquirer(settings, vault, idp).acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    after = vault.get(SCHEDULER["upn"])
    assert after.status == ConnectionStatus.NEEDS_RECONNECT and after.consecutive_failures == 1
    assert "interaction_required" in after.last_error and "AADSTS50076" in after.last_error
    requests = idp.requests
    with pytest.raises(OrganizerNotConnectedError, match="needs_reconnect"):
        acquirer(settings, vault, idp).acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    assert idp.requests == requests


def test_revoked_grant_is_recorded_as_revoked(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("invalid_grant", 50173, "The provided grant has expired due to it being revoked"))
    with pytest.raises(OrganizerNotConnectedError):
        acquirer(settings, vault, idp).acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.REVOKED


def test_transient_failure_is_transient_and_leaves_the_entry_alone(settings, vault, idp):
    entry = stored(vault, idp)
    entry = vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("temporarily_unavailable", 90001, "try later"))
    with pytest.raises(TokenServiceUnavailableError):
        acquirer(settings, vault, idp).acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    assert vault.get(SCHEDULER["upn"]).etag == entry.etag


def test_app_registration_problems_are_permanent_but_not_the_organizers_fault(settings, vault, idp):
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("invalid_client", 7000215, "Invalid client secret provided."))
    with pytest.raises(PermanentError) as caught:
        acquirer(settings, vault, idp).acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL))
    assert caught.value.reason == "app_misconfigured"
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.CONNECTED


@pytest.mark.parametrize(("scopes", "name"), [(SCOPE_MEETING_LOOKUP, "OnlineMeetings.Read"),
                                              (SCOPE_MEETING_WRITE, "OnlineMeetings.ReadWrite")])
def test_missing_consent_for_an_optional_scope_is_missing_scope_and_keeps_the_connection(settings, vault, idp,
                                                                                        scopes, name):
    # GIVEN an organizer connected without consent for an optional scope
    entry = stored(vault, idp)
    vault.save(dataclasses.replace(entry, cache=expire_access_token(entry.cache)))
    idp.answers.append(error("invalid_grant", 65001, "The user or administrator has not consented"))
    # WHEN a token with that scope is needed THEN missing_scope names it and says how to grant it
    with pytest.raises(MissingScopeError, match=name) as raised:
        acquirer(settings, vault, idp).acquire(SCHEDULER["upn"], list(scopes))
    assert raised.value.reason == "missing_scope" and "consent" in raised.value.detail
    assert "connect-device" in raised.value.detail
    # AND the connection itself stays healthy (join URLs keep working)
    assert vault.get(SCHEDULER["upn"]).status == ConnectionStatus.CONNECTED


class RacingVault(InMemoryTokenVault):
    """Makes the first `get` of each of two threads return before either writes (both read the same ETag)."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier = threading.Barrier(2, timeout=5)
        self.armed = False
        self._seen: set[int] = set()

    def get(self, organizer):
        entry = super().get(organizer)
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
            results.append(worker.acquire(SCHEDULER["upn"], list(SCOPE_JOIN_URL)))
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

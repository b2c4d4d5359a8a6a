"""The operator commands by tenant: list and revoke one tenant's organizers; connect-device refuses tenants that
are not allowed, and stores nothing for an account of one."""

import io
import json

import pytest

from shared.identity.vault import ConnectionStatus
from shared.organizers import connect_device, list_organizers, revoke
from shared.settings import load_settings
from shared.testing.vault import InMemoryTokenVault
from tests.auth_fakes import (
    FABRIKAM_SCHEDULER,
    FOREIGN_TENANT,
    OTHER_TENANT,
    SCHEDULER,
    TENANT,
    FakeIdentityPlatform,
    connected_entry,
)
from tests.sample_settings import sample_env

pytestmark = pytest.mark.unit


@pytest.fixture
def settings():
    return load_settings(sample_env())


@pytest.fixture
def vault():
    idp, vault = FakeIdentityPlatform(), InMemoryTokenVault(TENANT)
    vault.save(connected_entry(idp))
    vault.save(connected_entry(idp, user=FABRIKAM_SCHEDULER, status=ConnectionStatus.NEEDS_RECONNECT))
    return vault


def test_list_shows_the_tenant_and_can_keep_to_one(vault):
    out = io.StringIO()
    assert list_organizers(vault, out) == 3  # one needs attention
    text = out.getvalue()
    assert "TENANT" in text and TENANT in text and OTHER_TENANT in text
    only = io.StringIO()
    assert list_organizers(vault, only, tenant=TENANT) == 0
    assert "scheduler@contoso.test" in only.getvalue() and "fabrikam" not in only.getvalue()
    as_json = io.StringIO()
    list_organizers(vault, as_json, as_json=True, tenant=OTHER_TENANT)
    assert [e["tenant_id"] for e in json.loads(as_json.getvalue())] == [OTHER_TENANT]


def test_revoke_in_a_tenant(vault):
    out = io.StringIO()
    assert revoke(vault, SCHEDULER["upn"], out, OTHER_TENANT) == 1 and "in tenant" in out.getvalue()
    assert revoke(vault, SCHEDULER["upn"], io.StringIO(), TENANT) == 0
    assert vault.get(SCHEDULER["upn"]) is None and vault.get(FABRIKAM_SCHEDULER["upn"]) is not None


class DeviceFlowClients:
    """MSAL's device flow, signing in whoever `claims` says."""

    def __init__(self, claims):
        self.claims, self.tenants = claims, []

    def run(self, client_type, cache, call, tenant=None):
        self.tenants.append(tenant)

        class App:
            @staticmethod
            def initiate_device_flow(scopes):
                return {"user_code": "ABC", "message": "enter ABC"}

            @staticmethod
            def acquire_token_by_device_flow(flow):
                return {"access_token": "at", "scope": "VirtualAppointment.Read", "id_token_claims": self.claims}

        return call(App()), json.dumps({"cache": True})


def test_connect_device_refuses_tenants_off_the_list_and_accounts_of_them(settings, vault):
    out = io.StringIO()
    assert connect_device(settings, vault, DeviceFlowClients({}), None, out, tenant=FOREIGN_TENANT) == 1
    assert "not on ENTRA_ALLOWED_TENANTS" in out.getvalue()
    northwind = {"oid": "f4a5b6c7-d8e9-4f0a-9b1c-3d4e5f607182", "tid": FOREIGN_TENANT,
                 "preferred_username": "scheduler@northwind.test"}
    out = io.StringIO()
    assert connect_device(settings, vault, DeviceFlowClients(northwind), None, out) == 1
    assert "nothing stored" in out.getvalue() and vault.get("scheduler@northwind.test") is None
    fabrikam = {"oid": FABRIKAM_SCHEDULER["oid"], "tid": OTHER_TENANT, "preferred_username": FABRIKAM_SCHEDULER["upn"],
                "name": "Fabrikam scheduling account"}
    clients = DeviceFlowClients(fabrikam)
    out = io.StringIO()
    assert connect_device(settings, vault, clients, None, out, tenant=OTHER_TENANT) == 0
    assert f"in tenant {OTHER_TENANT}" in out.getvalue() and clients.tenants == [OTHER_TENANT, OTHER_TENANT]
    entry = vault.get(FABRIKAM_SCHEDULER["upn"], OTHER_TENANT)
    assert entry.status == ConnectionStatus.CONNECTED and entry.client_type == "public"
    assert entry.scopes == "VirtualAppointment.Read"


def test_list_shows_each_organizers_hash_and_find_hash_names_the_organizer(vault):
    from shared.organizers import find_hash, main
    from shared.redaction import hash_user

    out = io.StringIO()
    list_organizers(vault, out)
    entries = list(vault.entries(None))
    for entry in entries:
        assert entry.organizer_hash in out.getvalue()
    listed = io.StringIO()
    list_organizers(vault, listed, as_json=True)
    assert {e["organizer_hash"] for e in json.loads(listed.getvalue())} == {e.organizer_hash for e in entries}
    # An alert's hash may be of the object id or of the UPN the event named: both find the organizer
    target = entries[0]
    for value in (hash_user(target.oid), hash_user(target.upn.upper())):
        found = io.StringIO()
        assert find_hash(vault, value, found) == 0
        assert target.upn in found.getvalue()
    assert find_hash(vault, "0000000000000000", io.StringIO()) == 4
    printed = io.StringIO()
    assert main(["hash", target.upn], out=printed) == 0 and printed.getvalue().strip() == hash_user(target.upn)


def test_the_operator_page_shows_each_organizers_hash(settings, vault):
    from shared.pages.organizers import render

    entries = list(vault.entries(None))
    page = render(settings, entries, "key", None)
    assert all(entry.organizer_hash in page for entry in entries)


def test_revoke_in_calendar_mode_removes_the_subscription_first_while_the_token_works(vault):
    calls = []

    def unsubscribe(organizer, tenant):
        calls.append((organizer, tenant, vault.get(organizer, tenant) is not None))
        return True

    out = io.StringIO()
    assert revoke(vault, SCHEDULER["upn"], out, TENANT, unsubscribe=unsubscribe) == 0
    assert calls == [(SCHEDULER["upn"], TENANT, True)]  # the entry was still there
    assert "change-notification subscription" in out.getvalue()
    assert revoke(vault, SCHEDULER["upn"], io.StringIO(), TENANT, unsubscribe=unsubscribe) == 1
    assert len(calls) == 1  # nobody to unsubscribe any more


def test_list_in_calendar_mode_says_whether_each_organizers_outlook_changes_are_followed(vault):
    from shared.calendar_sync.keeper import organizer_key

    entry = next(iter(vault.entries()))
    out = io.StringIO()
    list_organizers(vault, out, as_json=True, calendar={organizer_key(entry.identity): "active"})
    assert '"calendar_subscription": "active"' in out.getvalue()
    out = io.StringIO()
    list_organizers(vault, out, calendar={})
    assert "Outlook changes of" in out.getvalue() and "not subscribed yet" in out.getvalue()
    plain = io.StringIO()
    list_organizers(vault, plain)
    assert "Outlook" not in plain.getvalue()

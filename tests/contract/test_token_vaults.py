"""The token-vault contract, run against the in-memory twin and the blob vault (on Azurite) alike."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.exceptions import OrganizerNotConnectedError, VaultConflictError
from shared.identity.tokens import OrganizerIdentity
from shared.identity.vault import ConnectionStatus, TokenVault, VaultEntry, flow_key, upn_hash
from shared.identity.vault_blob import BlobTokenVault
from shared.testing.vault import InMemoryTokenVault
from tests.auth_fakes import FABRIKAM_SCHEDULER, OTHER_TENANT, SCHEDULER, TENANT, FakeIdentityPlatform, connected_entry

pytestmark = pytest.mark.contract


class Inspect:
    """What a test may see of a vault at rest, whichever implementation stores it."""

    def __init__(self, vault: TokenVault) -> None:
        self.vault = vault

    def names(self) -> set[str]:
        if isinstance(self.vault, InMemoryTokenVault):
            return set(self.vault._blobs)
        assert isinstance(self.vault, BlobTokenVault)
        return {blob.name for blob in self.vault.container.list_blobs()}

    def put(self, name: str, text: str) -> None:
        if isinstance(self.vault, InMemoryTokenVault):
            self.vault._blobs[name] = (text, '"seeded"')
            return
        assert isinstance(self.vault, BlobTokenVault)
        self.vault.container.upload_blob(name, text, overwrite=True)

    def rewrite(self, name: str, edit: Any) -> None:
        if isinstance(self.vault, InMemoryTokenVault):
            text = self.vault.raw(name)
            assert text is not None
            self.vault._blobs[name] = (edit(text), '"x"')
            return
        assert isinstance(self.vault, BlobTokenVault)
        text = self.vault.container.download_blob(name).readall().decode()
        self.vault.container.upload_blob(name, edit(text), overwrite=True)


@pytest.fixture(params=["memory", "blob"])
def vault(request: pytest.FixtureRequest, azurite_conn: Any) -> Iterator[TokenVault]:
    if request.param == "memory":
        yield InMemoryTokenVault(TENANT)
        return
    blob_vault = BlobTokenVault(azurite_conn, "vault-" + uuid.uuid4().hex[:12], TENANT)
    yield blob_vault
    blob_vault.container.delete_container()


@pytest.fixture
def idp() -> FakeIdentityPlatform:
    return FakeIdentityPlatform()


def stored(vault: TokenVault, idp: FakeIdentityPlatform, **fields: Any) -> Any:
    return vault.save(connected_entry(idp, **fields))


def test_entry_is_found_by_oid_and_by_upn_in_any_case(vault, idp):
    saved = stored(vault, idp)
    for key in (SCHEDULER["oid"], SCHEDULER["oid"].upper(), SCHEDULER["upn"], "Scheduler@Contoso.TEST"):
        assert vault.get(key).oid == SCHEDULER["oid"] and vault.get(key).etag == saved.etag
    assert vault.get("someone@contoso.test") is None


def test_entries_are_keyed_by_tenant_and_object_id_and_upns_only_hashed(vault, idp):
    stored(vault, idp)
    names = Inspect(vault).names()
    assert f"organizers/{TENANT}/{SCHEDULER['oid']}.json" in names
    assert {f"aliases/{SCHEDULER['oid']}/{TENANT}", f"aliases/{upn_hash(SCHEDULER['upn'])}/{TENANT}"} <= names
    assert not any("scheduler@" in name for name in names)


def test_an_organizer_is_found_in_their_tenant_and_only_there(vault, idp):
    stored(vault, idp)
    stored(vault, idp, user=FABRIKAM_SCHEDULER)
    assert vault.get(SCHEDULER["upn"], TENANT).identity == OrganizerIdentity(TENANT, SCHEDULER["oid"])
    assert vault.get(SCHEDULER["upn"], OTHER_TENANT) is None and vault.get(SCHEDULER["oid"], OTHER_TENANT) is None
    assert vault.get(FABRIKAM_SCHEDULER["upn"]).tenant_id == OTHER_TENANT  # one tenant knows them: no tenant needed
    fabrikam = OrganizerIdentity(OTHER_TENANT, FABRIKAM_SCHEDULER["oid"])
    assert vault.get_identity(fabrikam).upn == "scheduler@fabrikam.test"
    assert [e.upn for e in vault.entries(OTHER_TENANT)] == ["scheduler@fabrikam.test"]
    assert vault.tenants_of(SCHEDULER["oid"]) == [TENANT]


def test_an_identifier_known_in_two_tenants_needs_the_tenant(vault, idp):
    stored(vault, idp)
    stored(vault, idp, user={**SCHEDULER, "tid": OTHER_TENANT})  # (a test double: the same ids in two tenants)
    with pytest.raises(OrganizerNotConnectedError, match="2 tenants"):
        vault.get(SCHEDULER["upn"])
    assert vault.get(SCHEDULER["upn"], OTHER_TENANT).tenant_id == OTHER_TENANT


def test_entries_written_before_tenancy_are_found_and_moved_on_the_next_write(vault, idp):
    # GIVEN an entry as the app wrote it before tenancy: no tenant, keyed by object id, UPN alias holding the oid
    legacy = connected_entry(idp)
    legacy.tenant_id = ""
    inspect = Inspect(vault)
    inspect.put(f"organizers/{SCHEDULER['oid']}.json", legacy.to_json())
    inspect.put(f"aliases/{upn_hash(SCHEDULER['upn'])}", SCHEDULER["oid"])
    # WHEN it is looked up, by either spelling, with or without the app's own tenant
    found = vault.get(SCHEDULER["upn"])
    assert found.tenant_id == TENANT and vault.get(SCHEDULER["oid"], TENANT).cache == legacy.cache
    assert [e.oid for e in vault.entries()] == [SCHEDULER["oid"]]
    # AND written (a refresh, say) THEN it moves to its tenant's place and the old blobs go
    vault.save(dataclasses.replace(found, consecutive_failures=1))
    names = inspect.names()
    assert f"organizers/{TENANT}/{SCHEDULER['oid']}.json" in names
    assert f"organizers/{SCHEDULER['oid']}.json" not in names and f"aliases/{upn_hash(SCHEDULER['upn'])}" not in names
    assert vault.get(SCHEDULER["upn"]).consecutive_failures == 1 and len(list(vault.entries())) == 1


def test_an_entry_needs_its_tenant(vault, idp):
    entry = connected_entry(idp)
    with pytest.raises(ValueError, match="tenant"):
        vault.save(VaultEntry(**{**entry.health(), "cache": entry.cache, "tenant_id": ""}))


def test_create_is_if_none_match_and_update_is_if_match(vault, idp):
    first = stored(vault, idp)
    with pytest.raises(VaultConflictError):
        vault.save(dataclasses.replace(first, etag=None))  # create over an existing entry
    second = vault.save(dataclasses.replace(first, consecutive_failures=1))
    with pytest.raises(VaultConflictError):
        vault.save(dataclasses.replace(first, consecutive_failures=2))  # stale ETag: the other write wins
    assert vault.get(SCHEDULER["oid"]).consecutive_failures == 1 and second.etag != first.etag


def test_store_connection_replaces_an_earlier_connection(vault, idp):
    stored(vault, idp, status=ConnectionStatus.NEEDS_RECONNECT, consecutive_failures=4)
    vault.store_connection(connected_entry(idp))
    entry = vault.get(SCHEDULER["upn"])
    assert entry.status == ConnectionStatus.CONNECTED and entry.consecutive_failures == 0


def test_alias_of_a_upn_that_moved_to_someone_else_does_not_match(vault, idp):
    stored(vault, idp)
    Inspect(vault).rewrite(f"organizers/{TENANT}/{SCHEDULER['oid']}.json",
                           lambda text: text.replace("scheduler@", "renamed@"))
    assert vault.get(SCHEDULER["upn"]) is None and vault.get(SCHEDULER["oid"]) is not None


def test_delete_removes_entry_and_alias(vault, idp):
    stored(vault, idp)
    assert vault.delete(SCHEDULER["upn"]).oid == SCHEDULER["oid"]
    assert Inspect(vault).names() == set() and vault.delete(SCHEDULER["upn"]) is None


def test_health_never_contains_the_token_cache(vault, idp):
    health = stored(vault, idp).health()
    assert "cache" not in health and "etag" not in health and health["upn"] == SCHEDULER["upn"]


def test_flow_is_taken_once_and_expires(vault):
    vault.put_flow(flow_key("s1"), {"flow": {"state": "s1"}})
    assert vault.take_flow(flow_key("s1")) == {"flow": {"state": "s1"}}
    assert vault.take_flow(flow_key("s1")) is None  # replay
    vault.put_flow(flow_key("s2"), {"flow": {}}, ttl_seconds=-1)
    assert vault.take_flow(flow_key("s2")) is None
    vault.put_flow(flow_key("s3"), {"flow": {}}, ttl_seconds=-1)
    vault.put_flow(flow_key("s4"), {"flow": {}})
    assert vault.purge_flows() == 1  # s3 only: s4 is still pending
    with pytest.raises(VaultConflictError):
        vault.put_flow(flow_key("s4"), {"flow": {}})  # a state is never reused


def test_entries_lists_every_organizer(vault, idp):
    stored(vault, idp)
    assert [entry.oid for entry in vault.entries()] == [SCHEDULER["oid"]]


def test_the_refresh_lease_is_exclusive_until_released(vault):
    # GIVEN one instance holds an organizer's refresh lease
    identity = OrganizerIdentity("7d0c2e5a-1b3f-4c8e-9a6d-0e5f4b3c2a10", SCHEDULER["oid"])
    with vault.refresh_lock(identity) as held:
        assert held
        # THEN another cannot have it (it would wait; here it gives up at once)
        with vault.refresh_lock(identity, wait_seconds=0) as second:
            assert not second
        # AND another organizer's lease is another lease
        other = OrganizerIdentity(identity.tenant_id, "8e2f3a4b-5c6d-4e7f-9a0b-1c2d3e4f5a6b")
        with vault.refresh_lock(other, wait_seconds=0) as third:
            assert third
    # WHEN released, the next instance gets it at once
    with vault.refresh_lock(identity, wait_seconds=0) as after:
        assert after


def test_a_lease_lasts_fifteen_to_sixty_seconds(vault):
    for seconds in (5, 61):
        with pytest.raises(ValueError, match="15 to 60"):
            vault._lease("locks/x/y", seconds)

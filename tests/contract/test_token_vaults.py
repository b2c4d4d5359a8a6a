"""The token-vault contract, run against the in-memory twin and the blob vault (on Azurite) alike."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.exceptions import VaultConflictError
from shared.identity.vault import BlobTokenVault, ConnectionStatus, TokenVault, flow_key
from shared.testing.vault import InMemoryTokenVault
from tests.auth_fakes import SCHEDULER, FakeIdentityPlatform, connected_entry

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
        yield InMemoryTokenVault()
        return
    blob_vault = BlobTokenVault(azurite_conn, "vault-" + uuid.uuid4().hex[:12])
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


def test_upns_are_stored_only_as_hashes_in_blob_names(vault, idp):
    stored(vault, idp)
    names = Inspect(vault).names()
    assert f"organizers/{SCHEDULER['oid']}.json" in names
    assert not any("scheduler@" in name for name in names)


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
    Inspect(vault).rewrite(f"organizers/{SCHEDULER['oid']}.json", lambda text: text.replace("scheduler@", "renamed@"))
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

"""The thin Table client's pure parts: connection strings, entity JSON, keys, Shared Key, errors."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.exceptions import SettingsError, TableStoreUnavailableError
from shared.settings import StorageConnection
from shared.storage.table_rest import (
    TableRestClient,
    _error,
    _key_literal,
    decode_entity,
    encode_entity,
    parse_connection_string,
)

pytestmark = pytest.mark.unit

KEY = base64.b64encode(b"k" * 32).decode()


def test_account_key_connection_string_gives_endpoint_and_key():
    # GIVEN an account-key connection string without an explicit endpoint
    account = parse_connection_string(f"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={KEY};"
                                      "EndpointSuffix=core.windows.net")
    # THEN the public endpoint is derived and the key decoded
    assert account.endpoint == "https://acme.table.core.windows.net"
    assert account.name == "acme" and account.key == b"k" * 32 and account.sas is None


def test_explicit_table_endpoint_wins_and_development_storage_is_azurite():
    account = parse_connection_string(f"AccountName=devstoreaccount1;AccountKey={KEY};"
                                      "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1/;")
    assert account.endpoint == "http://127.0.0.1:10002/devstoreaccount1"
    dev = parse_connection_string("UseDevelopmentStorage=true")
    assert dev.endpoint == "http://127.0.0.1:10002/devstoreaccount1" and dev.name == "devstoreaccount1"


def test_sas_connection_string_keeps_the_token_for_the_query():
    account = parse_connection_string("TableEndpoint=https://acme.table.core.windows.net;"
                                      "SharedAccessSignature=?sv=2019-02-02&sig=abc")
    assert account.name == "acme" and account.sas == "sv=2019-02-02&sig=abc" and account.key is None


@pytest.mark.parametrize("value", ["AccountName=acme", "TableEndpoint=https://x.table.core.windows.net", ""])
def test_connection_string_without_credentials_is_refused_by_name(value):
    with pytest.raises(SettingsError, match=r"AccountKey|TableEndpoint"):
        parse_connection_string(value)


def test_entity_round_trips_with_datetimes_annotated():
    # GIVEN an entity with strings and an aware datetime
    when = datetime(2026, 11, 21, 16, 57, 35, 316249, tzinfo=UTC)
    body = json.loads(encode_entity({"PartitionKey": "evt", "RowKey": "k_1", "State": "completed", "At": when}))
    # THEN the datetime is sent as Edm.DateTime
    assert body["At@odata.type"] == "Edm.DateTime" and body["At"] == "2026-11-21T16:57:35.316249Z"
    # WHEN the service answers with 7 fractional digits and its own metadata
    answer = {**body, "At": "2026-11-21T16:57:35.3162491Z", "odata.etag": "W/\"x\"",
              "Timestamp": "2026-11-21T16:57:35.3162491Z", "Timestamp@odata.type": "Edm.DateTime"}
    properties = decode_entity(answer)
    # THEN datetimes come back aware and metadata is dropped
    assert properties["At"] == when and properties["Timestamp"].tzinfo is UTC
    assert "odata.etag" not in properties and "At@odata.type" not in properties


def test_large_integers_are_sent_as_int64():
    body = json.loads(encode_entity({"PartitionKey": "p", "RowKey": "r", "Small": 7, "Big": 2**40, "Flag": True}))
    assert body["Small"] == 7 and "Small@odata.type" not in body and body["Flag"] is True
    assert body["Big"] == str(2**40) and body["Big@odata.type"] == "Edm.Int64"


def test_unsupported_property_types_are_refused():
    with pytest.raises(TypeError, match="Blob"):
        encode_entity({"PartitionKey": "p", "RowKey": "r", "Blob": b"bytes"})


def test_key_literals_double_quotes_and_escape_everything_else():
    assert _key_literal("k_evt:a@b") == "k_evt%3Aa%40b"
    assert _key_literal("o'brien") == "o%27%27brien"


async def test_shared_key_signature_follows_the_table_service_rule():
    # GIVEN a client on a path-style (Azurite) endpoint
    client = TableRestClient(StorageConnection(
        connection_string=f"AccountName=devstoreaccount1;AccountKey={KEY};"
                          "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1"), "idem")
    date = "Sat, 21 Nov 2026 16:57:35 GMT"
    # WHEN a request is authorized
    header = (await client._authorization("POST", "/idem", "application/json", date))["Authorization"]
    # THEN it signs verb, empty Content-MD5, type, date and /account/path (the account twice, path-style)
    text = f"POST\n\napplication/json\n{date}\n/devstoreaccount1/devstoreaccount1/idem"
    expected = base64.b64encode(hmac.new(b"k" * 32, text.encode(), hashlib.sha256).digest()).decode()
    assert header == f"SharedKey devstoreaccount1:{expected}"


class FakeCredential:
    """An Entra credential that counts token requests."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.calls = 0
        self.lifetime = lifetime

    async def get_token(self, *scopes):
        from azure.core.credentials import AccessToken

        self.calls += 1
        assert scopes == ("https://storage.azure.com/.default",)
        return AccessToken(f"token-{self.calls}", int(time.time() + self.lifetime))

    async def close(self):
        pass


async def test_identity_connection_uses_one_cached_bearer_token(monkeypatch):
    # GIVEN an identity-based connection (managed identity in Azure)
    credential = FakeCredential()
    monkeypatch.setattr("shared.storage.table_rest.storage_credential", lambda conn: credential)
    client = TableRestClient(StorageConnection(table_service_uri="https://acme.table.core.windows.net",
                                               client_id="cid"), "idem")
    # WHEN many requests are authorized
    headers = [await client._authorization("GET", "/idem", "", "d") for _ in range(50)]
    # THEN one token serves them all
    assert credential.calls == 1 and {h["Authorization"] for h in headers} == {"Bearer token-1"}


async def test_bearer_token_is_renewed_before_it_expires(monkeypatch):
    credential = FakeCredential(lifetime=200)  # inside the 5-minute refresh margin
    monkeypatch.setattr("shared.storage.table_rest.storage_credential", lambda conn: credential)
    client = TableRestClient(StorageConnection(table_service_uri="https://acme.table.core.windows.net"), "idem")
    await client._authorization("GET", "/idem", "", "d")
    await client._authorization("GET", "/idem", "", "d")
    assert credential.calls == 2


@pytest.mark.parametrize(("status", "error"), [
    (409, ResourceExistsError), (404, ResourceNotFoundError), (412, ResourceModifiedError),
    (503, TableStoreUnavailableError), (500, TableStoreUnavailableError), (429, TableStoreUnavailableError),
    (403, HttpResponseError), (400, HttpResponseError),
])
def test_answers_map_to_the_exceptions_the_sdk_raises(status, error):
    payload = json.dumps({"odata.error": {"code": "Code", "message": {"value": "what happened"}}}).encode()
    exc = _error(status, payload, "POST")
    assert isinstance(exc, error) and "what happened" in str(exc)


def test_a_non_json_error_body_is_kept_as_text():
    exc = _error(502, b"<html>bad gateway</html>", "GET")
    assert isinstance(exc, TableStoreUnavailableError) and "bad gateway" in str(exc)

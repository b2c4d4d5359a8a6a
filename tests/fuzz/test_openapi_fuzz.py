"""schemathesis against the HTTP twin's own OpenAPI document, served by the harness on the local stack.

Every generated request (valid and invalid query strings, with the function key and a genuine bearer token)
must get an answer the document describes: no 5xx, documented status codes, content types and schemas.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, reject, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method

from shared.http_twin.openapi import openapi_document

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]
KEY = "local-dev-function-key"
MAX_QUERY_BYTES = 7_500
@pytest.fixture(scope="session")
def auth_headers(api_token: str) -> dict[str, str]:
    """The function key and a genuine user token, so generated requests get past authentication."""
    return {"x-functions-key": KEY, "Authorization": f"Bearer {api_token}"}


# The document the app serves (checked below to be byte for byte what /api/openapi.json answers). Loaded
# here rather than from the server: schemathesis' lazy loader does not support pytest 9 yet.
schema = schemathesis.openapi.from_dict(json.loads(openapi_document()))


def test_the_served_document_is_the_one_fuzzed(twin):
    assert httpx.get(twin["base_url"] + "/api/openapi.json", timeout=30).json() == json.loads(openapi_document())


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))  # examples: the profile (conftest)
def test_twin_answers_as_its_openapi_document_says(case, twin, auth_headers):
    query = case.query or {}
    if len(urlencode(query, doseq=True)) > MAX_QUERY_BYTES:
        # The host's request-line limit (8 KiB, Kestrel's default; aiohttp's in the harness) answers such a
        # request before the app sees it: not the twin's contract.
        reject()
    # A method the function does not list is answered 404 by the Functions host (and the harness), not 405:
    # the platform's routing, which the app cannot change.
    excluded = [unsupported_method]
    if ("meetingId" in query) == ("joinWebUrl" in query):
        # "Exactly one of meetingId or joinWebUrl" is stated in the document's text: OpenAPI cannot express
        # it in a schema, so such a request is schema-valid yet rightly answered 400. Every other check holds.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=twin["base_url"] + "/api", headers=auth_headers, timeout=30,
                           excluded_checks=excluded)

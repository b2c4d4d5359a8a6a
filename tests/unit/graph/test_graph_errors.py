"""Graph failures map to exactly one permanent or transient error (real SDK error objects)."""

import httpx
import pytest
from msgraph.generated.models.o_data_errors.main_error import MainError
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from shared.exceptions import (
    AppOnlyTokenError,
    ForbiddenError,
    GraphRequestError,
    GraphUnavailableError,
    MeetingNotFoundError,
    OrganizerNotConnectedError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from shared.graph.gateway import classify_graph_error, retry_after_seconds

pytestmark = pytest.mark.unit


def odata(status, code="", message="", headers=None):
    error = ODataError(error=MainError(code=code, message=message))
    error.response_status_code = status
    error.response_headers = httpx.Headers(headers or {})
    return error


@pytest.mark.parametrize(("exc", "expected", "kind"), [
    (odata(404, "NotFound"), MeetingNotFoundError, PermanentError),
    (odata(403, "Forbidden", "Application permissions are not supported for this API."), AppOnlyTokenError,
     PermanentError),
    (odata(403, "Forbidden", "The user is not an organizer or participant."), ForbiddenError, PermanentError),
    (odata(401, "InvalidAuthenticationToken"), OrganizerNotConnectedError, PermanentError),
    (odata(400, "BadRequest", "Invalid meeting id"), GraphRequestError, PermanentError),
    (odata(429, "TooManyRequests", headers={"Retry-After": "7"}), ThrottledError, TransientError),
    (odata(503, "ServiceUnavailable"), GraphUnavailableError, TransientError),
    (odata(500), GraphUnavailableError, TransientError),
    (httpx.ReadTimeout("slow"), GraphUnavailableError, TransientError),
    (httpx.ConnectError("refused"), GraphUnavailableError, TransientError),
])
def test_each_failure_has_one_class(exc, expected, kind):
    error = classify_graph_error(exc)
    assert type(error) is expected and isinstance(error, kind)


def test_retry_after_is_read_as_seconds_or_http_date():
    assert classify_graph_error(odata(429, headers={"Retry-After": "7"})).retry_after == 7.0
    assert retry_after_seconds(httpx.Headers({"Retry-After": "Sat, 21 Nov 2026 10:00:30 GMT"}),
                               now=1795255200.0) == 30.0
    assert retry_after_seconds(httpx.Headers({})) is None
    assert classify_graph_error(httpx.ReadTimeout("x")).reason == "graph_timeout"

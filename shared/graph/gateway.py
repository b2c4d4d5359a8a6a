"""Microsoft Graph through msgraph-sdk: one client per worker, organizer tokens per request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from shared.common.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after
from shared.common.tls import ssl_context
from shared.exceptions import (
    AppOnlyTokenError,
    ForbiddenError,
    GraphRequestError,
    GraphUnavailableError,
    JoinLinkError,
    MeetingNotFoundError,
    OrganizerNotConnectedError,
    ThrottledError,
)
from shared.identity.tokens import SCOPE_JOIN_URL, SCOPE_MEETING_LOOKUP, OrganizerIdentity, TokenSource
from shared.settings import Settings

if TYPE_CHECKING:
    from msgraph import GraphServiceClient

    from shared.graph.transport import Http1Transport

log = logging.getLogger(__name__)
_ORGANIZER_OPTION_KEY = "va_join_links.organizer"


class OrganizerOption:
    """A kiota request option naming whose delegated token authorizes the request (the organizer, in their
    tenant), and its source."""

    def __init__(self, organizer: str, scopes: tuple[str, ...], tokens: TokenSource,
                 tenant: str | None = None) -> None:
        self.organizer = organizer
        self.scopes = scopes
        self.tokens = tokens
        self.tenant = tenant

    @staticmethod
    def get_key() -> str:
        """The option's key in kiota's request options."""
        return _ORGANIZER_OPTION_KEY


class OrganizerAuthProvider:
    """Kiota authentication provider that signs each request with its organizer's delegated token.

    Graph client and connection pool are shared by every organizer; only the bearer token differs,
    and it is chosen per request from an OrganizerOption, so a token can never leak across users.
    """

    def __init__(self, graph_host: str) -> None:
        self._graph_host = graph_host.lower()

    async def authenticate_request(self, request: Any, additional_authentication_context: Any = None) -> None:
        """Attach the organizer's bearer token; refuse to send it to any host but Graph's."""
        option = request.request_options.get(_ORGANIZER_OPTION_KEY)
        if option is None:
            raise JoinLinkError("Graph request built without an OrganizerOption; refusing to send it")
        host = (urlsplit(str(request.url)).hostname or "").lower()
        if host != self._graph_host:
            raise JoinLinkError(f"refusing to send a delegated token to {host!r}; Graph is {self._graph_host!r}")
        token = await option.tokens.token_for(option.organizer, option.scopes, option.tenant)
        request.headers.try_add("Authorization", f"Bearer {token}")


def build_graph_client(settings: Settings) -> tuple[GraphServiceClient, Http1Transport]:
    """Build the worker's GraphServiceClient and its pool (imports msgraph: call on first use only)."""
    import httpx
    from kiota_http.middleware import RedirectHandler, UserAgentHandler
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph_core import GraphClientFactory

    from shared.graph.telemetry_handler import TelemetryHandler
    from shared.graph.transport import Http1Transport

    transport = Http1Transport(ssl_context=ssl_context(settings.tls_ca_bundle),
                               timeout_seconds=settings.graph_timeout_seconds)
    http_client = httpx.AsyncClient(timeout=httpx.Timeout(settings.graph_timeout_seconds), transport=transport)
    # The SDK's default chain minus what this app never uses, each costing CPU on every request:
    # - RetryHandler: throttling is ours to handle (shared/pipeline/processor.py); kiota's would sleep inside the
    #   invocation for up to minutes;
    # - ParametersNameDecoding, UrlReplace (/me rewrite), Headers/BodyInspection: our URLs are built
    #   with literal `$` names and /users/{id} paths, and nothing inspects headers or bodies.
    # Redirects stay kiota's (it drops the Authorization header on a cross-host redirect), and the
    # telemetry handler keeps the SdkVersion and client-request-id headers Graph support asks for.
    middleware = [RedirectHandler(), UserAgentHandler(), TelemetryHandler()]
    http_client = GraphClientFactory.create_with_custom_middleware(middleware, client=http_client)
    auth = OrganizerAuthProvider(urlsplit(settings.graph_base_url).hostname or "")
    adapter = GraphRequestAdapter(auth, client=http_client)  # type: ignore[arg-type]
    adapter.base_url = settings.graph_base_url
    return GraphServiceClient(request_adapter=adapter), transport


class GraphGateway:
    """The join-URL calls the app makes, with every failure classified into the app's errors.

    Meeting writes (graph/meetings.py) go through the same client and the same classification.
    """

    def __init__(self, settings: Settings, credentials: TokenSource) -> None:
        self._settings = settings
        self._credentials = credentials
        self._client: GraphServiceClient | None = None
        self._transport: Http1Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> GraphServiceClient:
        """The worker's client; rebuilt only if the event loop changed (its pool is bound to one)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._transport = build_graph_client(self._settings)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the Graph client's connection pool."""
        # Closed directly: msgraph-core's transport wrapper does not pass httpx's aclose() on.
        if self._transport is not None:
            await self._transport.aclose()
        self._client = self._transport = None

    def _meetings_url(self, organizer: str) -> str:
        return f"{self._settings.graph_base_url.rstrip('/')}/users/{_segment(organizer)}/onlineMeetings"

    async def identify(self, organizer: str, tenant: str | None = None,
                       tokens: TokenSource | None = None) -> OrganizerIdentity:
        """The organizer's tenant and object id, as the token source knows them."""
        return await (tokens or self._credentials).identify(organizer, tenant)

    @property
    def my_meetings_url(self) -> str:
        """`/me/onlineMeetings`: with a delegated token, the only path Graph accepts for meeting writes."""
        return f"{self._settings.graph_base_url.rstrip('/')}/me/onlineMeetings"

    def token_source(self, tokens: TokenSource | None) -> TokenSource:
        """The given token source, or the worker's organizer credentials."""
        return tokens or self._credentials

    async def call(self, organizer: str, tokens: TokenSource, request: Callable[[], Awaitable[Any]],
                   tenant: str | None = None) -> Any:
        """Send one Graph request; failures come back as the app's classified errors."""
        return await self._call(organizer, tokens, request, tenant)

    async def join_web_url(self, organizer: str, meeting_id: str, tokens: TokenSource | None = None,
                           tenant: str | None = None) -> str:
        """The virtual-appointment join URL of the organizer's meeting."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.online_meetings.item.get_virtual_appointment_join_web_url import (
            get_virtual_appointment_join_web_url_request_builder as join_url_builder,
        )

        source = tokens or self._credentials
        config: Any = RequestConfiguration(options=[OrganizerOption(organizer, SCOPE_JOIN_URL, source, tenant)])
        # A raw URL: kiota would otherwise re-expand its URI template, character by character, each time
        # the URL is read (three times a request, ~15 % of the worker's CPU per event).
        url = f"{self._meetings_url(organizer)}/{_segment(meeting_id)}/getVirtualAppointmentJoinWebUrl()"
        builder = join_url_builder.GetVirtualAppointmentJoinWebUrlRequestBuilder(self.client.request_adapter, url)
        response = await self._call(organizer, source, lambda: builder.get(config), tenant)
        if response is None or not response.value:
            raise GraphRequestError("Graph returned no join URL for the meeting")
        return str(response.value)

    async def find_meeting_id(self, organizer: str, join_web_url: str, tokens: TokenSource | None = None,
                              tenant: str | None = None) -> str:
        """Resolve a Teams joinWebUrl to the meeting id (needs OnlineMeetings.Read)."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.online_meetings.online_meetings_request_builder import (
            OnlineMeetingsRequestBuilder,
        )

        odata_filter = "JoinWebUrl eq '{}'".format(join_web_url.replace("'", "''"))  # OData literal quoting
        source = tokens or self._credentials
        config: Any = RequestConfiguration(
            options=[OrganizerOption(organizer, SCOPE_MEETING_LOOKUP, source, tenant)])
        url = f"{self._meetings_url(organizer)}?$filter={_segment(odata_filter)}"
        adapter = self.client.request_adapter
        request = OnlineMeetingsRequestBuilder(adapter, url).to_get_request_information(config)
        # Read as JSON, not as kiota's OnlineMeeting: the first such model's deserializers import every Graph
        # model (Entity's table), seconds of CPU in a fresh worker; only the id is needed.
        raw = await self._call(organizer, source,
                               lambda: adapter.send_primitive_async(request, "bytes", _odata_error_map()), tenant)
        try:
            meetings = (json.loads(raw) if raw else {}).get("value") or []
        except (ValueError, AttributeError):
            meetings = []
        if not meetings or not isinstance(meetings[0], dict) or not meetings[0].get("id"):
            raise MeetingNotFoundError("no online meeting of the organizer has that joinWebUrl")
        return str(meetings[0]["id"])

    async def _call(self, organizer: str, tokens: TokenSource, request: Callable[[], Awaitable[Any]],
                    tenant: str | None = None) -> Any:
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                answer = await request()
            except JoinLinkError:
                raise
            except Exception as exc:  # classification below decides; nothing escapes unclassified
                error = classify_graph_error(exc)
                if isinstance(error, (ForbiddenError, OrganizerNotConnectedError)):
                    tokens.invalidate(organizer, tenant)
                _log_answer(graph_status(exc), error.reason, started)
                if attempt == 1 and graph_status(exc) == 401:
                    continue  # a cached token revoked or expired early: one retry with a fresh one
                error.graph_status = graph_status(exc)
                raise error from exc
            _log_answer(None, None, started)
            return answer
        raise AssertionError("unreachable")


def _log_answer(status: int | None, reason: str | None, started: float) -> None:
    """One line per Graph answer (stage=graph), success included: the status tile and the throttling alert
    read these, so each 429 is counted once, and only Graph's. A success is `2xx` (the SDK does not say which);
    a transport failure has no status."""
    log.info("Graph answered %s%s", status or ("2xx" if reason is None else "-"), f" ({reason})" if reason else "",
             extra={"stage": "graph", "graph_status": str(status) if status else ("2xx" if reason is None else None),
                    "reason": reason, "graph_duration_ms": round((time.perf_counter() - started) * 1000, 1)})


def _odata_error_map() -> dict[str, Any]:
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    return {"XXX": ODataError}


def _segment(value: str) -> str:
    """value as one URL path segment or query value: what RFC 6570 simple expansion would produce."""
    return quote(value, safe="")


def graph_status(exc: BaseException) -> int | None:
    """The HTTP status of a Graph error, when it came from an answer."""
    status = getattr(exc, "response_status_code", None)
    return status if isinstance(status, int) else None


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """Graph's Retry-After from response headers (any mapping with a case-insensitive get)."""
    value = headers.get("retry-after") if headers is not None else None
    return parse_retry_after(value, cap=MAX_RETRY_AFTER_SECONDS, now=now)


def classify_graph_error(exc: BaseException) -> JoinLinkError:
    """Map an SDK or transport exception to exactly one of the app's permanent or transient errors."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return GraphUnavailableError(f"Graph timed out ({type(exc).__name__})", reason="graph_timeout")
    if isinstance(exc, httpx.TransportError):
        return GraphUnavailableError(f"Graph unreachable ({type(exc).__name__})", reason="graph_unreachable")
    status = graph_status(exc)
    headers = getattr(exc, "response_headers", None)
    code, message = _odata_error(exc)
    detail = f"Graph {status} {code}: {message}".strip()
    if status == 404:
        return MeetingNotFoundError(detail)
    if status == 403:
        if "application permission" in message.lower() or "app-only" in message.lower():
            return AppOnlyTokenError(detail)
        return ForbiddenError(detail)
    if status == 401:
        return OrganizerNotConnectedError(f"Graph refused the organizer's token: {detail}")
    if status == 429:
        return ThrottledError(detail, retry_after=retry_after_seconds(headers))
    if status is not None and (status >= 500 or status == 408):
        return GraphUnavailableError(detail, retry_after=retry_after_seconds(headers))
    if status is not None and 400 <= status < 500:
        return GraphRequestError(detail)
    return GraphUnavailableError(f"unexpected Graph failure: {type(exc).__name__}: {exc}"[:300],
                                 reason="graph_unexpected")


def _odata_error(exc: BaseException) -> tuple[str, str]:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or ""
    return str(code), str(message)[:300]

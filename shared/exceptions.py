"""Every error the app raises on purpose, classified once: permanent versus transient."""

from __future__ import annotations

from collections.abc import Sequence


class JoinLinkError(Exception):
    """Base class of the app's own errors."""

    reason = "error"


class SettingsError(JoinLinkError):
    """One or more settings are missing or invalid; the message names each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("Invalid app settings:\n  - " + "\n  - ".join(self.problems))


class PermanentError(JoinLinkError):
    """Retrying cannot help: the event is rejected on its first attempt with a stable reason code."""

    reason = "permanent_failure"
    http_status = 422

    def __init__(self, detail: str, *, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class InvalidEventError(PermanentError):
    """The message is not a well-formed appointment event."""

    reason = "invalid_event"
    http_status = 400


class UnsupportedEventTypeError(InvalidEventError):
    """The event is well-formed but of a type this app does not handle."""

    reason = "unsupported_event_type"


class MeetingNotFoundError(PermanentError):
    """Graph does not know the meeting (or no meeting has that joinWebUrl)."""

    reason = "meeting_not_found"
    http_status = 404


class ForbiddenError(PermanentError):
    """Graph refused: the signed-in user is neither organizer nor participant, or lacks the scope."""

    reason = "forbidden"
    http_status = 403


class AppOnlyTokenError(ForbiddenError):
    """An app-only token reached an API that supports delegated permissions only."""

    reason = "app_only_token"


class OrganizerNotConnectedError(PermanentError):
    """No delegated credential can be had for the organizer until a person (re)connects them."""

    reason = "organizer_not_connected"
    http_status = 403


class GraphRequestError(PermanentError):
    """Graph rejected the request itself (400-class other than 403/404/429)."""

    reason = "graph_request_rejected"
    # Most often a malformed meeting id from the caller, so the caller's status, not a gateway's.
    http_status = 400


class TransientError(JoinLinkError):
    """Retrying later may succeed: the host retries, then moves the message to the poison queue."""

    reason = "transient_failure"
    http_status = 503

    def __init__(self, detail: str, *, reason: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        if reason is not None:
            self.reason = reason


class TableStoreUnavailableError(TransientError):
    """The idempotency table could not be reached or answered with a server error."""

    reason = "idempotency_store_unavailable"


class GraphUnavailableError(TransientError):
    """Graph answered 5xx, timed out, or could not be reached."""

    reason = "graph_unavailable"
    http_status = 502


class ThrottledError(TransientError):
    """Graph answered 429; retry_after says how long it asked us to wait."""

    reason = "throttled"
    http_status = 429


class TokenServiceUnavailableError(TransientError):
    """The identity platform could not be reached or answered 5xx."""

    reason = "token_service_unavailable"
    http_status = 503

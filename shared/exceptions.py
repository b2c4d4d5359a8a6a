"""Every error the app raises on purpose, classified once: permanent versus transient.

JoinLinkError is the root. PermanentError: retrying cannot help (the event is rejected on its first
attempt, an HTTP caller gets a 4xx). TransientError: retrying later may (the host retries, then poison).
Errors in neither branch are about the app's own state (settings, a vault write race, a refused bearer
token) and are handled where they are raised.

Not in the tree, on purpose: ValueError raised by the settings converters (caught inside settings.py
and turned into one SettingsError naming every bad setting), argparse's exits in the operator commands,
and AssertionError/ValueError for a caller breaking a function's contract (a programming error, which
must surface as a crash rather than be classified).
"""

from __future__ import annotations

from collections.abc import Sequence


class JoinLinkError(Exception):
    """Base class of the app's own errors."""

    reason = "error"
    # The HTTP status of the Graph answer behind this error, when there was one (set by the Graph gateway), so
    # that the outcome line of the appointment carries it too.
    graph_status: int | None = None


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


class UnmappedOrganizerError(PermanentError):
    """A scheduler's booking names a host that no organizer mapping covers (webhook intake: 422)."""

    reason = "organizer_unmapped"
    http_status = 422


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


class MissingScopeError(ForbiddenError):
    """The organizer is connected, but never consented to a scope this event needs (detail: how to grant it)."""

    reason = "missing_scope"


class MeetingRequiredError(InvalidEventError):
    """A created event without a meeting while meeting management is off."""

    reason = "meeting_required"
    http_status = 422


class StaleEventError(PermanentError):
    """A change older than the one already applied to the appointment: no Graph call was made."""

    reason = "stale_event"
    http_status = 409


class AppointmentCancelledError(PermanentError):
    """A create or reschedule of an appointment that is already cancelled: no meeting is made or changed."""

    reason = "appointment_cancelled"
    http_status = 409


class OnlineMeetingMissingError(PermanentError):
    """Graph made the calendar event without a Teams meeting (isOnlineMeeting false or no joinUrl)."""

    reason = "online_meeting_missing"


class SubscriptionLimitError(PermanentError):
    """Graph refused a new change-notification subscription: the mailbox has 1,000 across all apps."""

    reason = "subscription_limit"


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
    """A table store (idempotency, appointment or alias records) could not be reached or answered with a
    server error; the detail names the table."""

    reason = "table_store_unavailable"


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


class KeyInProgressError(TransientError):
    """Another worker is processing the same idempotency key right now; retry after retry_after seconds."""

    reason = "duplicate_in_progress"


class RecordConflictError(JoinLinkError):
    """An appointment record changed (or appeared, or went) since it was read: read it and decide again."""

    reason = "appointment_record_conflict"


class VaultConflictError(JoinLinkError):
    """A token-vault entry changed (or appeared) since it was read: reload and decide again."""

    reason = "token_vault_conflict"


class VaultUnavailableError(TransientError):
    """The token vault's storage could not be reached or answered 5xx."""

    reason = "token_vault_unavailable"


class BearerError(JoinLinkError):
    """A bearer token was refused: 401 (not a valid token) or 403 (valid, but not allowed).

    `error` is the RFC 6750 error code (invalid_token, insufficient_scope, or missing_token when none
    was sent) and `scope` the scope to name in the challenge.
    """

    def __init__(self, status: int, error: str, detail: str, *, scope: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.scope = status, error, detail, scope
        self.reason = "invalid_token" if status == 401 else error


class DestinationRefusedError(PermanentError):
    """A webhook destination is not one we may send to (scheme, allow-list, or a non-public address)."""

    reason = "destination_refused"


class WebhookTransientError(TransientError):
    """The receiver may accept later (408, 429, 5xx, network error, timeout); retry_after when it asked."""

    reason = "webhook_transient"


class WebhookSignatureError(JoinLinkError, ValueError):
    """A Standard Webhooks signature could not be made or did not verify; the message says why (never the secret).

    Also a ValueError: a malformed secret is a bad value, and settings validation treats it as one.
    """

    reason = "invalid_signature"


class UnreadableRecordError(JoinLinkError):
    """A rejection or dead-letter record without the message it should carry (replay leaves it in place)."""

    reason = "unreadable_record"

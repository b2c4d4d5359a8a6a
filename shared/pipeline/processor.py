"""The queue function's logic: one message in, exactly one outcome out (or a raise for the host to retry)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace

from shared.attendance.check import plan_check
from shared.common.strict_json import decode_utf8
from shared.common.vocabulary import AppointmentStatus, EventType, OutcomeKind
from shared.exceptions import KeyInProgressError, PermanentError, ThrottledError, TransientError
from shared.pipeline.appointment_flow import AppointmentFlow, BeforeDelete
from shared.pipeline.inbound import AppointmentEvent, EventIds, best_effort_ids, parse_event
from shared.pipeline.notifications import failed_event, ready_event
from shared.pipeline.records import JoinUrlResult, Rejection
from shared.pipeline.rejections import RejectionRecorder
from shared.pipeline.sms import SmsFailure, SmsJob, SmsSending, plan_sms, send_now, windows_attendees
from shared.redaction import hash_tenant, hash_user
from shared.settings import setting_default
from shared.storage.appointments import AppointmentRecord
from shared.storage.idempotency import Claim, ClaimKind, IdempotencyStore
from shared.storage.requeue import Requeuer, backoff, requeue_delay, unwrap_requeued, wrap_requeued
from shared.webhooks.outbound import WebhookEvent

log = logging.getLogger(__name__)
_IN_PROGRESS_WAIT = 5.0


@dataclass(frozen=True)
class Delivery:
    """One queue message as the processor sees it: the original text and how often it was tried."""

    text: str
    dequeue_count: int = 1
    requeue_attempt: int = 0


@dataclass(frozen=True)
class Outcome:
    """What became of one message: `ready` (a result), `rejected` (a rejection) or `requeued`.

    `sms` are texts for `sms-outbox`; `sms_failures` are texts that failed inline (a cancellation's).
    """

    kind: OutcomeKind
    result: JoinUrlResult | None = None
    rejection: Rejection | None = None
    webhook: WebhookEvent | None = None
    sms: tuple[SmsJob, ...] = ()
    sms_failures: tuple[SmsFailure, ...] = ()
    # The appointment's attendance check (ATTENDANCE_REPORTS), for `attendance-checks`.
    attendance_check: str | None = None

    def webhooks(self) -> list[str]:
        """Every outbox message of this outcome: its own webhook, then one per failed text."""
        hooks = [self.webhook] if self.webhook is not None else []
        return [hook.to_message() for hook in (*hooks, *(f.webhook for f in self.sms_failures))]


class AppointmentProcessor:
    """Turns an appointment message into a result, a rejection or a delayed copy; raises if transient.

    Each event id is claimed in the idempotency store first: a duplicate within the window gets the
    stored result back without a Graph call, and its webhook keeps the same webhook-id, so
    deliver_webhook sends it once. Outputs are re-emitted for a duplicate because the first attempt
    may have died after recording the result but before the host wrote its outputs.
    """

    def __init__(self, flow: AppointmentFlow, requeuer: Requeuer, idempotency: IdempotencyStore, *,
                 rejections: RejectionRecorder, max_requeues: int, stale_claim_seconds: float | None = None,
                 sms: SmsSending | None = None, sms_reminder: str | None = None,
                 attendance_grace_minutes: float | None = None) -> None:
        self._flow = flow
        self._rejections = rejections
        self._sms = sms
        self._sms_reminder = sms_reminder
        # None: attendance reports are off.
        self._attendance_grace = attendance_grace_minutes
        self._requeuer = requeuer
        self._idempotency = idempotency
        self._max_requeues = max_requeues
        # An invocation is bounded well below this (Graph timeout plus the throttle budget), so an older
        # in-progress claim belongs to a worker that died: take it over.
        self._stale_claim_seconds = (float(setting_default("IDEMPOTENCY_STALE_CLAIM_SECONDS"))
                                     if stale_claim_seconds is None else stale_claim_seconds)

    async def aclose(self) -> None:
        """Release the requeuer's connections."""
        await self._requeuer.aclose()

    async def process(self, body: bytes | str, dequeue_count: int = 1, message_id: str | None = None) -> Outcome:
        """Process one message; TransientError (and unexpected errors) propagate for the host to retry.

        A rejection's record is written here, before the `.failed` webhook is handed back for the outbox:
        `message_id` (the queue message's) makes a retry of the same message find its record written.
        """
        started = time.perf_counter()
        message_key = message_id or hashlib.sha256(body if isinstance(body, bytes) else body.encode()).hexdigest()
        if isinstance(body, bytes):
            try:
                text = decode_utf8(body)
            except UnicodeDecodeError as exc:
                return await self._undecodable(body, dequeue_count, exc, started, message_key)
        else:
            text = body
        unwrapped = unwrap_requeued(text)
        delivery = Delivery(unwrapped.text, dequeue_count, unwrapped.attempt)
        event: AppointmentEvent | None = None
        claim: Claim | None = None
        tenant: str | None = None
        finished = False
        try:
            event = parse_event(delivery.text)
            tenant = event.tenant_id
            claim = await self._idempotency.begin(_key(event), stale_after_seconds=self._stale_claim_seconds)
            if claim.kind is ClaimKind.COMPLETED and claim.result:
                finished = True
                result = JoinUrlResult.from_json(claim.result)
                _log_outcome(OutcomeKind.READY, "duplicate", event, delivery, started, tenant=result.tenant_id)
                return Outcome(OutcomeKind.READY, result=result, webhook=ready_event(result, event.callback_url),
                               attendance_check=self._check(event, result))
            # Who the organizer is, in which tenant, before anything is asked of Graph: a tenantId the
            # organizer does not belong to is refused here, and only that tenant's token is used after.
            tenant = (await self._flow.identify(event.organizer, event.tenant_id)).tenant_id
            event = replace(event, tenant_id=tenant)
            inline: list[SmsFailure | None] = []
            handled = await self._flow.handle(event, self._before_delete(event, inline))
            result = handled.result
            texts = plan_sms(event, handled.action, result, reminder=self._sms_reminder) if self._sms else []
            # A cancellation text already sent inline (before the delete) is not queued again.
            jobs = tuple(job for job in texts if not (inline and job.message_type == "cancellation"))
            await self._idempotency.complete(_key(event), result.to_json(), claim)
            finished = True
        except PermanentError as exc:
            rejection = await self._rejections.record(_rejection(exc, delivery, event, tenant), message_key)
            _log_outcome(OutcomeKind.REJECTED, rejection.reason, event, delivery, started, detail=exc.detail,
                         tenant=tenant, graph_status=exc.graph_status)
            return Outcome(OutcomeKind.REJECTED, rejection=rejection,
                           webhook=failed_event(rejection, event.callback_url if event else None))
        except KeyInProgressError as exc:
            # Another worker holds this event (or its appointment's meeting) right now: look again shortly
            # instead of burning retries. The holder is nearly always done within a second; waiting longer each
            # time still outlasts a dead holder's claim (5 s, 15 s, 45 s, ... ends past the stale limit).
            longest = backoff(_IN_PROGRESS_WAIT, delivery.requeue_attempt)
            return await self._requeue(delivery, event, exc, started, min(exc.retry_after or longest, longest))
        except ThrottledError as exc:
            return await self._requeue(delivery, event, exc, started, exc.retry_after or 1.0)
        except TransientError as exc:
            _log_outcome("failed", exc.reason, event, delivery, started, detail=exc.detail, tenant=tenant,
                         graph_status=exc.graph_status)
            raise
        finally:
            # Rejections, requeues and transient failures give the claim back: a retry or replay starts fresh.
            if claim is not None and claim.owned and not finished and event is not None:
                await self._idempotency.release(_key(event), claim)
        _log_outcome(OutcomeKind.READY, None, event, delivery, started, tenant=tenant, action=handled.action.value)
        return Outcome(OutcomeKind.READY, result=result, webhook=ready_event(result, event.callback_url), sms=jobs,
                       sms_failures=tuple(f for f in inline if f is not None),
                       attendance_check=self._check(event, result))

    def _check(self, event: AppointmentEvent, result: JoinUrlResult) -> str | None:
        """The attendance check of a scheduled appointment; a duplicate re-plans the same one (it dedupes itself)."""
        if self._attendance_grace is None or result.status != AppointmentStatus.SCHEDULED:
            return None
        check = plan_check(appointment_id=result.appointment_id, organizer=result.organizer,
                           online_meeting_id=result.online_meeting_id, start=result.start, end=result.end,
                           grace_minutes=self._attendance_grace, tenant_id=result.tenant_id,
                           client_emails=tuple(c.email for c in event.schedule.clients if c.email),
                           staff=tuple(p.user for p in event.schedule.participants),
                           callback_url=event.callback_url)
        return check.to_json() if check is not None else None

    def _before_delete(self, event: AppointmentEvent, inline: list[SmsFailure | None]) -> list[BeforeDelete]:
        """With client SMS on, the cancellation text goes out just before the meeting is deleted."""
        sender = self._sms
        attendees = windows_attendees(event.schedule.clients) if sender is not None else ()
        if sender is None or not attendees or event.event_type != EventType.CANCELLED:
            return []

        async def text_then_delete(record: AppointmentRecord, meeting_id: str) -> None:
            job = SmsJob(event.appointment_id, record.organizer, event.event_id, meeting_id, "cancellation",
                         attendees, record.tenant_id, None, event.callback_url)
            inline.append(await send_now(sender, job))

        return [text_then_delete]

    async def _undecodable(self, body: bytes, dequeue_count: int, exc: UnicodeDecodeError, started: float,
                           message_key: str) -> Outcome:
        # No text, so no event and no webhook: the rejection keeps the bytes exactly, for a person to look at.
        rejection = await self._rejections.record(
            Rejection(reason="invalid_encoding", detail=f"message is not UTF-8 text (byte {exc.start})",
                      original_message="", original_bytes=body, dequeue_count=dequeue_count), message_key)
        _log_outcome(OutcomeKind.REJECTED, rejection.reason, None, Delivery("", dequeue_count), started)
        return Outcome(OutcomeKind.REJECTED, rejection=rejection)

    async def _requeue(self, delivery: Delivery, event: AppointmentEvent | None, exc: TransientError,
                       started: float, wait: float) -> Outcome:
        if delivery.requeue_attempt >= self._max_requeues:
            _log_outcome("failed", f"{exc.reason}_too_often", event, delivery, started)
            raise TransientError(f"still {exc.reason} after {delivery.requeue_attempt} requeues",
                                 reason=f"{exc.reason}_too_often") from exc
        delay = requeue_delay(wait)
        await self._requeuer.requeue(wrap_requeued(delivery.text, delivery.requeue_attempt + 1, exc.reason), delay)
        _log_outcome(OutcomeKind.REQUEUED, exc.reason, event, delivery, started, retry_after=delay,
                     graph_status=exc.graph_status)
        return Outcome(OutcomeKind.REQUEUED)


def _key(event: AppointmentEvent) -> str:
    return f"evt:{event.event_id}"


def _rejection(exc: PermanentError, delivery: Delivery, event: AppointmentEvent | None,
               tenant: str | None) -> Rejection:
    ids = (EventIds(event.event_id, event.appointment_id, event.organizer) if event is not None
           else best_effort_ids(delivery.text))
    return Rejection(reason=exc.reason, detail=exc.detail, original_message=delivery.text, event_id=ids.event_id,
                     appointment_id=ids.appointment_id, organizer=ids.organizer, dequeue_count=delivery.dequeue_count,
                     tenant_id=tenant)


def _log_outcome(outcome: str, reason: str | None, event: AppointmentEvent | None, delivery: Delivery,
                 started: float, *, tenant: str | None = None, **fields: object) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    level = logging.WARNING if outcome in (OutcomeKind.REJECTED, "failed") else logging.INFO
    log.log(level, "appointment %s: outcome=%s reason=%s dequeue_count=%d duration_ms=%.1f",
            event.appointment_id if event else "-", outcome, reason or "-", delivery.dequeue_count, duration_ms,
            extra={
                "event_id": event.event_id if event else None,
                "appointment_id": event.appointment_id if event else None,
                "organizer_hash": hash_user(event.organizer) if event else None,
                # Tenants in telemetry are hashed like organizers.
                "tenant_hash": hash_tenant(tenant or (event.tenant_id if event else None)),
                # The processing-time and outcome tiles read stage=appointment lines only.
                "stage": "appointment",
                "outcome": outcome,
                "reason": reason,
                "duration_ms": duration_ms,
                "dequeue_count": delivery.dequeue_count,
                "requeue_attempt": delivery.requeue_attempt,
                **fields,
            })

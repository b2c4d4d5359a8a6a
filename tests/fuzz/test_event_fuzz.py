"""Property-based: any message is parsed or rejected with a reason code; never an unhandled exception."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import event, given, note

from shared.exceptions import PermanentError, TransientError
from shared.pipeline.inbound import AppointmentEvent, parse_event
from shared.pipeline.join_url_resolver import JoinUrlResolver
from shared.pipeline.processor import AppointmentProcessor
from shared.storage.requeue import unwrap_requeued
from shared.testing.idempotency import InMemoryIdempotencyStore
from shared.testing.requeue import InMemoryRequeuer
from tests.fakes import FakeGraph, make_flow, make_rejections, no_sleep
from tests.fuzz.strategies import ORG, messages

pytestmark = [pytest.mark.unit, pytest.mark.fuzz]
URL = "https://visit.teams.microsoft.com/webrtc-svc/api/route?convId=1"
# Every reason a message can be rejected with on the queue path when Graph itself is healthy.
MESSAGE_REASONS = {"invalid_json", "invalid_event", "unsupported_event_type", "meeting_not_found",
                   "meeting_required"}
REASON_CODE = re.compile(r"^[a-z][a-z_]*[a-z]$")


@given(messages)
def test_parse_event_returns_an_event_or_rejects_with_a_reason(text):
    try:
        parsed = parse_event(text)
    except PermanentError as exc:
        event(f"rejected:{exc.reason}")
        assert exc.reason in MESSAGE_REASONS and exc.detail
        return
    event("parsed")
    assert isinstance(parsed, AppointmentEvent)
    assert parsed.event_id and parsed.appointment_id and parsed.organizer
    # Without a meeting the event asks for one to be made (meeting management decides), so any mix parses.
    assert parsed.event_type in ("appointment.created", "appointment.rescheduled", "appointment.cancelled")


def _processor() -> AppointmentProcessor:
    graph = FakeGraph({(ORG, "m1"): URL}, {(ORG, "https://teams.microsoft.com/l/x"): "m1"})
    resolver = JoinUrlResolver(graph, inline_throttle_budget=2.0, sleep=no_sleep)
    return AppointmentProcessor(make_flow(graph, resolver), InMemoryRequeuer(), InMemoryIdempotencyStore(),
                                rejections=make_rejections(), max_requeues=3)


@given(messages)
def test_processor_gives_every_message_exactly_one_outcome_on_its_first_attempt(text):
    loop = asyncio.new_event_loop()
    try:
        outcome = loop.run_until_complete(_processor().process(text, dequeue_count=1))
    except TransientError as exc:  # the only exception the host may see: it retries
        event(f"transient:{exc.reason}")
        return
    finally:
        loop.close()
    event(f"{outcome.kind}:{outcome.rejection.reason if outcome.rejection else '-'}")
    note(repr(outcome))
    assert outcome.kind in ("ready", "rejected", "requeued")
    if outcome.kind == "ready":
        assert outcome.result is not None and outcome.result.join_url == URL and outcome.webhook is not None
    if outcome.kind == "rejected":
        rejection = outcome.rejection
        assert rejection is not None and REASON_CODE.match(rejection.reason) and rejection.reason in MESSAGE_REASONS
        # Rejected on the first attempt, with the original kept byte for byte for replay.
        assert rejection.dequeue_count == 1 and rejection.original_message == unwrap_requeued(text).text
        record = rejection.to_dict()
        assert record["reason"] and record["detail"] and record["originalMessage"] == rejection.original_message
        if outcome.webhook is not None:
            assert outcome.webhook.type == "appointment.joinurl.failed" and rejection.appointment_id

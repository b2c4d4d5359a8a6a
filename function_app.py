"""Composition root: triggers and bindings wired to the `shared` package; no business logic here."""

import logging
import os
import typing

import azure.functions as func

from shared import queues, telemetry
from shared.http_twin import appointments, join_url
from shared.http_twin.openapi import (
    APPOINTMENT_ROUTE,
    JOIN_URL_ROUTE,
    ME_JOIN_URL_ROUTE,
    OPENAPI_ROUTE,
    openapi_document,
)
from shared.identity import keepalive
from shared.intake import graph_notifications
from shared.intake import http as intake
from shared.pages import connect as connect_page
from shared.pages import organizers as organizers_page
from shared.pipeline import sms as sms_sender
from shared.services import Services
from shared.settings import load_settings
from shared.storage import parked_archive, queue_metrics

# Validated at start-up: a missing or bad setting stops indexing with a message naming it.
services = Services(load_settings())

# The Azure SDKs log every storage request and response (URL and headers) at INFO, and httpx every Graph
# request's full URL (the organizer's UPN is in it), which the worker would forward: CPU on every event
# (docs/performance.md) and personal data in the logs. Warnings still pass.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
logging.getLogger("httpx").setLevel(logging.WARNING)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
# Application Insights is set up on the first invocation, and only when a connection string is set.
instrumented = telemetry.instrumented(os.environ)


# dataType binary: the host hands the worker the message's bytes. Without it, it decodes them as UTF-8 and
# replaces what is not UTF-8 with U+FFFD, so a producer's broken bytes would pass as text nobody sent.
@app.function_name("process_appointment")
@app.queue_trigger(arg_name="msg", queue_name=queues.APPOINTMENTS, connection=queues.STORAGE_CONNECTION,
                   data_type=func.DataType.BINARY)
@app.queue_output(arg_name="results", queue_name=queues.JOIN_URLS, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="outbox", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="sms", queue_name=queues.SMS_OUTBOX, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="checks", queue_name=queues.ATTENDANCE_CHECKS, connection=queues.STORAGE_CONNECTION)
@instrumented
# typing.List, not list: Azure's Python worker refuses PEP 585 generics inside func.Out at indexing
# ("invalid non-type annotation"), and an app that fails to index runs no function at all.
async def process_appointment(msg: func.QueueMessage, results: func.Out[str],
                              outbox: func.Out[typing.List[str]],  # noqa: UP006
                              sms: func.Out[typing.List[str]],  # noqa: UP006
                              checks: func.Out[str]) -> None:
    """Appointment event → its result on `join-urls`, or a rejection; each with its webhook on the outbox.

    A rejection's record goes to `appointments-rejected` from the processor itself, before its `.failed` webhook
    can exist: output bindings are written after the function returns, in no documented order. Client texts go
    to `sms-outbox` (a cancellation's is sent before the meeting is deleted; if it failed, its record goes to
    `sms-failed`, written here before its webhook). Records kept for a person are written by the app, without
    expiry: a binding cannot set a message's lifetime. Transient failures raise, so the host retries, then
    moves the message to poison.
    """
    outcome = await services.processor.process(msg.get_body(), msg.dequeue_count or 1, msg.id)
    await services.sms_failures.send_all([failure.record for failure in outcome.sms_failures])
    if outcome.result is not None:
        results.set(outcome.result.to_json())
    if hooks := outcome.webhooks():
        outbox.set(hooks)
    if outcome.sms:
        sms.set([job.to_json() for job in outcome.sms])
    if outcome.attendance_check is not None:
        checks.set(outcome.attendance_check)


@app.function_name("check_attendance")
@app.queue_trigger(arg_name="msg", queue_name=queues.ATTENDANCE_CHECKS, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="results", queue_name=queues.ATTENDANCE, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="outbox", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@instrumented
async def check_attendance(msg: func.QueueMessage, results: func.Out[str], outbox: func.Out[str]) -> None:
    """After an appointment's end: who joined and for how long → `attendance` and an appointment.attendance webhook.

    A check not yet due hides itself again; one whose appointment moved or was cancelled drops itself.
    """
    outcome = await services.attendance.run(msg.get_body().decode("utf-8", "replace"))
    if outcome.result is not None and outcome.webhook is not None:
        results.set(outcome.result)
        outbox.set(outcome.webhook.to_message())


@app.function_name("send_sms")
@app.queue_trigger(arg_name="msg", queue_name=queues.SMS_OUTBOX, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="outbox", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@instrumented
async def send_sms(msg: func.QueueMessage, outbox: func.Out[str]) -> None:
    """A client text (Teams Premium) apart from the join link: a failure becomes its record (sms-failed, written
    by the app without expiry, before its webhook) and its webhook."""
    failure = await sms_sender.send_job(services.meetings, msg.get_body().decode("utf-8", "replace"))
    if failure is not None:
        await services.sms_failures.send_all([failure.record])
        outbox.set(failure.webhook.to_message())


@app.function_name("deliver_webhook")
@app.queue_trigger(arg_name="msg", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@instrumented
async def deliver_webhook(msg: func.QueueMessage) -> None:
    """Outbox event → signed POST to the scheduler; never calls Graph. Permanent failures dead-letter (written by
    the app, without expiry)."""
    record = await services.webhooks.dispatch(msg.get_body())
    if record is not None:
        await services.dead_letters.send_all([record.to_json()])


@app.function_name("get_join_url")
@app.route(route=JOIN_URL_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@instrumented
async def get_join_url(req: func.HttpRequest) -> func.HttpResponse:
    """The HTTP twin: ad-hoc join-URL lookup."""
    return await join_url.get_join_url(req, services.resolver)


@app.function_name("get_appointment")
@app.route(route=APPOINTMENT_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@instrumented
async def get_appointment(req: func.HttpRequest) -> func.HttpResponse:
    """The HTTP twin: an appointment's links, times and status from its record (no Graph call)."""
    return await appointments.get_appointment(req, services.appointments)


@app.function_name("openapi")
@app.route(route=OPENAPI_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@instrumented
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The HTTP twin's OpenAPI document."""
    return func.HttpResponse(openapi_document(), mimetype="application/json")


@app.function_name("get_my_join_url")
@app.route(route=ME_JOIN_URL_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@instrumented
async def get_my_join_url(req: func.HttpRequest) -> func.HttpResponse:
    """The HTTP twin for Entra bearer callers (no function key): Graph is called On-Behalf-Of the caller."""
    return await join_url.get_join_url(req, services.resolver, services.bearer, require_bearer=True,
                                       credential=services.app_credential)


# Webhook intakes: the sender's own signature is checked by the function (the function key too, by the host:
# put `?code=<key>` in the URL the scheduler posts to). The event is written by the queue output binding,
# which the host flushes before the response leaves: a 2xx means it is on `appointments`.
@app.function_name("intake_calcom")
@app.route(route=intake.CALCOM_ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@app.queue_output(arg_name="appointments", queue_name=queues.APPOINTMENTS, connection=queues.STORAGE_CONNECTION)
@instrumented
async def intake_calcom(req: func.HttpRequest, appointments: func.Out[str]) -> func.HttpResponse:
    """Cal.com booking webhooks → contract-v1 events on `appointments`."""
    return await intake.receive_calcom(req, services.intake, appointments)


@app.function_name("intake_calendly")
@app.route(route=intake.CALENDLY_ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@app.queue_output(arg_name="appointments", queue_name=queues.APPOINTMENTS, connection=queues.STORAGE_CONNECTION)
@instrumented
async def intake_calendly(req: func.HttpRequest,
                          appointments: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    """Calendly invitee webhooks → contract-v1 events on `appointments` (several when a booking chain folds)."""
    return await intake.receive_calendly(req, services.intake, services.aliases, appointments)


@app.function_name("intake_standard_webhooks")
@app.route(route=intake.STANDARD_ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
@app.queue_output(arg_name="appointments", queue_name=queues.APPOINTMENTS, connection=queues.STORAGE_CONNECTION)
@instrumented
async def intake_standard_webhooks(req: func.HttpRequest, appointments: func.Out[str]) -> func.HttpResponse:
    """Contract-v1 events from any Standard Webhooks sender → `appointments`."""
    return await intake.receive_standard(req, services.intake, appointments)


@app.function_name("connect")
@app.route(route=connect_page.CONNECT_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@instrumented
async def connect(req: func.HttpRequest) -> func.HttpResponse:
    """An organizer's one-time consent: redirect to Entra sign-in (authorization code + PKCE)."""
    return await connect_page.connect(req, services.settings, services.vault, services.msal_clients)


@app.function_name("request_admin_consent")
@app.route(route=connect_page.ADMIN_CONSENT_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@instrumented
async def request_admin_consent(req: func.HttpRequest) -> func.HttpResponse:
    """A tenant administrator's consent for everyone in their tenant: redirect to Entra's admin consent."""
    return await connect_page.admin_consent(req, services.settings, services.vault)


# Anonymous: Entra redirects the browser here, and its `code` parameter would clash with a function key's.
@app.function_name("callback")
@app.route(route=connect_page.CALLBACK_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@instrumented
async def callback(req: func.HttpRequest) -> func.HttpResponse:
    """Entra's redirect after sign-in: the organizer's token cache goes into the token vault."""
    return await connect_page.callback(req, services.settings, services.vault, services.msal_clients,
                                       services.on_connected)


# Microsoft Graph posts here (MEETING_KIND=calendar). Anonymous: Graph sends no credential, and each notification
# carries its subscription's clientState, checked by handle_calendar_notification before anything else.
@app.function_name("graph_notifications")
@app.route(route=graph_notifications.NOTIFICATIONS_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="notifications", queue_name=queues.CALENDAR_NOTIFICATIONS,
                  connection=queues.STORAGE_CONNECTION)
@instrumented
def graph_notifications_http(req: func.HttpRequest,
                             notifications: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    """Graph's validation echo, or change notifications onto `calendar-notifications` (202; no storage call)."""
    return graph_notifications.receive_changes(req, notifications, services.settings)


@app.function_name("graph_lifecycle")
@app.route(route=graph_notifications.LIFECYCLE_ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="notifications", queue_name=queues.CALENDAR_NOTIFICATIONS,
                  connection=queues.STORAGE_CONNECTION)
@instrumented
def graph_lifecycle_http(req: func.HttpRequest,
                         notifications: func.Out[typing.List[str]]) -> func.HttpResponse:  # noqa: UP006
    """Graph's validation echo, or lifecycle notifications onto `calendar-notifications` (202; no storage call)."""
    return graph_notifications.receive_lifecycle(req, notifications, services.settings)


@app.function_name("handle_calendar_notification")
@app.queue_trigger(arg_name="msg", queue_name=queues.CALENDAR_NOTIFICATIONS, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="outbox", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@instrumented
async def handle_calendar_notification(msg: func.QueueMessage,
                                       outbox: func.Out[typing.List[str]]) -> None:  # noqa: UP006
    """A calendar change → its appointment's record and an appointment.*_by_organizer webhook, or nothing (the app's
    own write, not the app's event, a wrong clientState); a lifecycle event → reauthorize, subscribe again, resync."""
    outcome = await services.calendar_sync.handle(msg.get_body().decode("utf-8", "replace"), msg.dequeue_count or 1)
    if outcome.webhooks:
        outbox.set(outcome.webhooks)


@app.function_name("sync_calendars")
@app.timer_trigger(arg_name="timer", schedule=services.settings.calendar_sync_schedule)
@app.queue_output(arg_name="outbox", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@instrumented
async def sync_calendars(timer: func.TimerRequest, outbox: func.Out[typing.List[str]]) -> None:  # noqa: UP006
    """MEETING_KIND=calendar: every connected organizer's subscription made, renewed or made again; rows of
    disconnected organizers dropped; calendars resynced with calendarView/delta when due."""
    outcome = await services.sync_calendars()
    if outcome.webhooks:
        outbox.set(outcome.webhooks)


# Not admin/organizers: the Functions host refuses routes that begin with `admin` (its own API).
@app.function_name("manage_organizers")
@app.route(route=organizers_page.ORGANIZERS_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@instrumented
async def manage_organizers(req: func.HttpRequest) -> func.HttpResponse:
    """The operator page: every organizer's connection, with connect, reconnect and admin-consent links."""
    return await organizers_page.organizers_page(req, services.settings, services.vault, services.calendar_states)


# The schedule is read at indexing time from the validated settings, so an unset KEEPALIVE_SCHEDULE
# falls back to its default instead of failing the host's %SETTING% resolution.
@app.function_name("keep_alive")
@app.timer_trigger(arg_name="timer", schedule=services.settings.keepalive_schedule)
@instrumented
async def keep_alive(timer: func.TimerRequest) -> None:
    """Refresh idle organizer connections before they lapse; log each organizer's health."""
    await keepalive.keep_alive(services.vault, services.vault_acquirer, services.settings.keepalive_idle_hours)


@app.function_name("queue_metrics")
@app.timer_trigger(arg_name="timer", schedule=services.settings.queue_metrics_schedule)
@instrumented
async def queue_metrics_timer(timer: func.TimerRequest) -> None:
    """Every queue's depth (poison, rejected and dead-letter included) as the `queue_depth` metric."""
    await queue_metrics.report_queue_depths(services.settings.storage)


@app.function_name("archive_parked")
@app.timer_trigger(arg_name="timer", schedule=services.settings.parked_archive_schedule)
@instrumented
async def archive_parked(timer: func.TimerRequest) -> None:
    """Parked messages (poison, dead letters, SMS failures) that would expire soon → the blob archive replay reads."""
    await parked_archive.archive_expiring(services.settings.storage, services.settings.parked_archive_container,
                                          services.settings.parked_archive_margin_hours)

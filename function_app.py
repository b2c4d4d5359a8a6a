"""Composition root: triggers and bindings wired to the `shared` package; no business logic here."""

import logging
import os

import azure.functions as func

from shared import queues, telemetry
from shared.http_twin import join_url
from shared.http_twin.openapi import JOIN_URL_ROUTE, ME_JOIN_URL_ROUTE, OPENAPI_ROUTE, openapi_document
from shared.identity import keepalive
from shared.intake import http as intake
from shared.pages import connect as connect_page
from shared.services import Services
from shared.settings import load_settings
from shared.storage import queue_metrics

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


@app.function_name("process_appointment")
@app.queue_trigger(arg_name="msg", queue_name=queues.APPOINTMENTS, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="results", queue_name=queues.JOIN_URLS, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="rejected", queue_name=queues.APPOINTMENTS_REJECTED,
                  connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="outbox", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@instrumented
async def process_appointment(msg: func.QueueMessage, results: func.Out[str], rejected: func.Out[str],
                              outbox: func.Out[str]) -> None:
    """Appointment event → join URL on `join-urls`, or a rejection; each with its webhook on the outbox.

    Transient failures raise, so the host retries and finally moves the message to the poison queue.
    """
    outcome = await services.processor.process(msg.get_body(), msg.dequeue_count or 1)
    if outcome.result is not None:
        results.set(outcome.result.to_json())
    if outcome.rejection is not None:
        rejected.set(outcome.rejection.to_json())
    if outcome.webhook is not None:
        outbox.set(outcome.webhook.to_message())


@app.function_name("deliver_webhook")
@app.queue_trigger(arg_name="msg", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="dead_letter", queue_name=queues.WEBHOOK_DEAD_LETTER,
                  connection=queues.STORAGE_CONNECTION)
@instrumented
async def deliver_webhook(msg: func.QueueMessage, dead_letter: func.Out[str]) -> None:
    """Outbox event → signed POST to the scheduler; never calls Graph. Permanent failures dead-letter."""
    record = await services.webhooks.dispatch(msg.get_body())
    if record is not None:
        dead_letter.set(record.to_json())


@app.function_name("get_join_url")
@app.route(route=JOIN_URL_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@instrumented
async def get_join_url(req: func.HttpRequest) -> func.HttpResponse:
    """The HTTP twin: ad-hoc join-URL lookup."""
    return await join_url.get_join_url(req, services.resolver)


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
    return await join_url.get_join_url(req, services.resolver, services.bearer, require_bearer=True)


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
async def intake_calendly(req: func.HttpRequest, appointments: func.Out[str]) -> func.HttpResponse:
    """Calendly invitee webhooks → contract-v1 events on `appointments`."""
    return await intake.receive_calendly(req, services.intake, appointments)


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


# Anonymous: Entra redirects the browser here, and its `code` parameter would clash with a function key's.
@app.function_name("callback")
@app.route(route=connect_page.CALLBACK_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@instrumented
async def callback(req: func.HttpRequest) -> func.HttpResponse:
    """Entra's redirect after sign-in: the organizer's token cache goes into the token vault."""
    return await connect_page.callback(req, services.settings, services.vault, services.msal_clients)


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

"""Composition root: triggers and bindings wired to the `shared` package; no business logic here."""

import azure.functions as func

from shared import http_api, queues
from shared.openapi import JOIN_URL_ROUTE, OPENAPI_ROUTE, openapi_document
from shared.services import Services
from shared.settings import load_settings

# Validated at start-up: a missing or bad setting stops indexing with a message naming it.
services = Services(load_settings())

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("process_appointment")
@app.queue_trigger(arg_name="msg", queue_name=queues.APPOINTMENTS, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="results", queue_name=queues.JOIN_URLS, connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="rejected", queue_name=queues.APPOINTMENTS_REJECTED,
                  connection=queues.STORAGE_CONNECTION)
@app.queue_output(arg_name="outbox", queue_name=queues.WEBHOOK_OUTBOX, connection=queues.STORAGE_CONNECTION)
async def process_appointment(msg: func.QueueMessage, results: func.Out[str], rejected: func.Out[str],
                              outbox: func.Out[str]) -> None:
    """Appointment event → join URL on `join-urls`, or a rejection; each with its webhook on the outbox.

    Transient failures raise, so the host retries and finally moves the message to the poison queue.
    """
    outcome = await services.processor.process(msg.get_body().decode("utf-8", "replace"), msg.dequeue_count or 1)
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
async def deliver_webhook(msg: func.QueueMessage, dead_letter: func.Out[str]) -> None:
    """Outbox event → signed POST to the scheduler; never calls Graph. Permanent failures dead-letter."""
    record = await services.webhooks.dispatch(msg.get_body().decode("utf-8", "replace"))
    if record is not None:
        dead_letter.set(record.to_json())


@app.function_name("get_join_url")
@app.route(route=JOIN_URL_ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def get_join_url(req: func.HttpRequest) -> func.HttpResponse:
    """The HTTP twin: ad-hoc join-URL lookup."""
    return await http_api.get_join_url(req, services.resolver)


@app.function_name("openapi")
@app.route(route=OPENAPI_ROUTE, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The HTTP twin's OpenAPI document."""
    return func.HttpResponse(openapi_document(), mimetype="application/json")

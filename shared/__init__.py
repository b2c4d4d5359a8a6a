"""Virtual-appointment join links: the app package behind function_app.py.

One folder per capability; cross-cutting modules sit at the top. Read a layer as "may import anything
below it, nothing above it, and nothing beside it": a wrong-way import fails `lint-imports` (contracts in
pyproject.toml), which `make lint` and so `make test` run. Folder `__init__.py` files stay empty, so the
function app imports only what an invocation needs (cold start: docs/performance.md).

Top: operator commands and twins (nothing imports them)
    diagnose.py     `python -m shared.diagnose --organizer UPN`: calendar-backed meetings checked on a real tenant
                    (the link on a calendar event's meeting, the meeting after a cancel); uses organizers' settings.
    organizers.py   `python -m shared.organizers list|revoke|connect-device [--tenant]`: organizer connections.
    replay.py       `python -m shared.replay [--tenant] [--peek]`: parked messages (rejected, poison,
                    dead-lettered, failed SMS, archived) back to their queue.
    send_test_event.py  `python -m shared.send_test_event`: one test event into a deployed app with the
                    operator's Entra sign-in, and its outcome.
    testing/        In-memory twins of the stores (idempotency, appointments, aliases, the token vault, the
                    requeue queue, overflow, subscriptions) for tests, the bench and chaos; each passes the
                    same contract suite as the real one (tests/contract).

services.py         The worker's long-lived objects (Graph client, token caches, stores), built on first use.
                    function_app.py wires triggers and bindings to it and to the HTTP adapters.

HTTP adapters: the only code that speaks azure.functions and problem+json
    http_twin/      The HTTP twin: join-URL lookups with a function key or a bearer token (join_url), an
                    appointment's record (appointments), and its OpenAPI document (openapi).
    pages/          HTML for people, in one look (look: a stylesheet allowed by its hash): the connect page, the
                    admin-consent link and their callback (connect), the operator page (organizers).
    intake/         Webhook intakes for schedulers (below http_twin, whose OpenAPI document describes them):
                    one module per source (calcom, calendly, standard), their signatures (signatures), the
                    contract-v1 event they build (events), booking chains as one appointment whatever order
                    their links arrive in (chains), organizer mapping (organizers), settings (config) and the
                    HTTP functions' logic (http). Beside them, Microsoft Graph's own posts: the validation echo and
                    change and lifecycle notifications onto their queue (graph_notifications).

calendar_sync/      Changes made in Outlook coming back (MEETING_KIND=calendar): one change-notification
                    subscription per organizer, made, renewed, reauthorized and removed (keeper), Graph's POSTs as
                    queue messages (notifications), a calendar change judged once against the appointment record
                    and told as a `_by_organizer` webhook (changes), and the queue function's and timer's logic:
                    clientState checked, lifecycle events, calendarView delta resyncs (sync).

pipeline/           One appointment message in, one outcome out: parse the inbound event (inbound) and its
                    lifecycle fields (appointment_fields), decide what it does to the appointment, once, as
                    pure functions (lifecycle), carry that out against the appointment record and Graph
                    under a lease (appointment_flow), resolve join URLs with throttling inside a budget
                    (join_url_resolver), client texts (sms), build the result or rejection (records), keep a
                    rejection and the message it refused (rejections) and its webhook (notifications), claim
                    the event id once (processor). Beside the parser, its best-effort reader of which event
                    a refused message is about (inbound.best_effort_ids).

attendance/         After the appointment (ATTENDANCE_REPORTS): its check, planned per scheduled end (check), re-hidden
                    until due and dropped when the record moved on (checker), the meeting's attendance reports read
                    as the organizer (reports), and who joined for how long, classified once (classify).

graph/              Microsoft Graph through msgraph-sdk: the join-URL calls and the one classification of
                    Graph's failures (gateway), meeting writes and client SMS as the organizer on /me
                    (meetings), the appointment's event on the organizer's calendar with its Teams meeting
                    (calendar), change-notification subscriptions and calendarView delta under a per-mailbox
                    limiter (subscriptions), over the HTTP/1.1 pool (transport), with the SDK's telemetry headers
                    (telemetry_handler).
webhooks/           Telling the scheduling system: outbound event types and outbox messages (outbound), which
                    hosts and addresses a webhook may go to (destination), the signed POST (sender), once per
                    webhook-id with back-off (dispatcher).

identity/           Delegated tokens only (Graph refuses app-only tokens for this API), organizers keyed by
                    tenant and object id: token sources and their cache (tokens), the app's own credential
                    toward Entra: secret, certificate or federated (app_credential), MSAL per authority and its
                    error classification (msal), the token vault's rule (vault) and its blob storage
                    (vault_blob), the acquirer that refreshes from it (vault_acquirer), keep-alive
                    (keepalive), the connect sign-in and admin consent (connect_flow), device-less local users
                    (dev_password), bearer token validation per tenant (bearer) and On-Behalf-Of (obo).

storage/            Azure Storage as the app writes it: queue clients (queue_client), the requeue envelope,
                    requeuer, delay rounding and x3 back-off (requeue), the Table REST client (table_rest),
                    idempotency records and their claim rule (idempotency), appointment records (appointments),
                    which earlier booking a rebooked one stands for (aliases), originals too big for a queue
                    record kept in a blob (overflow), the storage credential (credentials), queue depth metrics
                    (queue_metrics), what each parked queue holds and where it goes back (parked_routes), the
                    archive that keeps parked messages past their queue lifetime (parked_archive), and each
                    organizer's calendar subscription with its clientState and delta link (subscriptions).

Foundation: everything may use these
    settings.py     Every setting validated at start-up into one typed Settings, each problem named.
    settings_registry.py  Every setting declared once (SETTINGS): meaning, default, required, secret.
    settings_values.py    How each kind of setting value is read and checked (the rule behind each spec).
    contracts.py    The published JSON Schemas (contracts/schemas), read on first use (OpenAPI, tests).
    telemetry.py    Application Insights on the first invocation, only when configured; gauges.
    queues.py       Queue names the functions bind to.
    problems.py     RFC 9457 problem details (for the HTTP adapters only).
    redaction.py    Users and tenants in telemetry as a hash.
    common/         One home per rule: the vocabulary (event types, statuses, webhook types and outcome kinds as
                    enums: vocabulary), timestamps (clock), GUID/UPN (ids), field validators (fields), JSON as
                    the app accepts it from outside (strict_json), TLS context (tls), Retry-After and its cap
                    (retry_after), https-or-loopback URLs (urls), the Standard Webhooks signer
                    (standard_webhooks), the keep-alive HTTP/1.1 pool under Graph and the table store (http1).
    exceptions.py   Every error the app raises on purpose: permanent versus transient, classified once.
    version.py      The app's version, the one source pyproject.toml, azure.yaml and the contracts follow.
"""

"""Virtual-appointment join links: the app package behind function_app.py.

One folder per capability; cross-cutting modules sit at the top. Read a layer as "may import anything
below it, nothing above it, and nothing beside it": a wrong-way import fails `lint-imports` (contracts in
pyproject.toml), which `make lint` and so `make test` run. Folder `__init__.py` files stay empty, so the
function app imports only what an invocation needs (cold start; docs/performance.md).

Top: operator commands and twins (nothing imports them)
    organizers.py   `python -m shared.organizers list|revoke|connect-device`: organizer connections.
    replay.py       `python -m shared.replay`: rejected, poison and dead-lettered messages back to their queue.
    testing/        In-memory twins of the stores (idempotency, token vault, requeuer, overflow) for tests, the bench
                    and chaos; each passes the same contract suite as the real one (tests/contract).

services.py         The worker's long-lived objects (Graph client, token caches, stores), built on first use.
                    function_app.py wires triggers and bindings to it and to the HTTP adapters.

HTTP adapters: the only code that speaks azure.functions and problem+json
    http_twin/      The HTTP twin: join-URL lookups with a function key or a bearer token (join_url), and
                    its OpenAPI document (openapi).
    pages/          HTML for people: the connect page and its callback (connect).
    intake/         Webhook intakes for schedulers (below http_twin, whose OpenAPI document describes them):
                    one module per source (calcom, calendly, standard), their signatures (signatures), the
                    contract-v1 event they build (events), organizer mapping (organizers), settings (config)
                    and the HTTP functions' logic (http).

pipeline/           One appointment message in, one outcome out: parse the inbound event (inbound), resolve
                    the join URL through Graph with throttling inside a budget (join_url_resolver), build
                    the result or rejection (records) and its webhook (notifications), claim the event id
                    once (processor).

graph/              Microsoft Graph through msgraph-sdk: the two calls the app makes and the one
                    classification of Graph's failures (gateway), over an aiohttp pool (transport).
webhooks/           Telling the scheduling system: outbound event types and outbox messages (outbound), the
                    signed POST to a guarded destination (sender), once per webhook-id with back-off
                    (dispatcher).

identity/           Delegated tokens only (Graph refuses app-only tokens for this API): token sources and
                    their cache (tokens), MSAL and its error classification (msal), the token vault (vault)
                    and the acquirer that refreshes from it (vault_acquirer), keep-alive (keepalive), the
                    connect sign-in (connect_flow), device-less local users (dev_password), bearer token
                    validation (bearer) and On-Behalf-Of (obo).

storage/            Azure Storage as the app writes it: queue clients (queue_client), requeue envelope and
                    requeuer (requeue), the Table REST client (table_rest), idempotency records and their
                    claim rule (idempotency), originals too big for a queue record kept in a blob (overflow),
                    the storage credential (credentials), queue depth metrics (queue_metrics).

Foundation: everything may use these
    settings.py     Every setting validated at start-up into one typed Settings, each problem named.
    settings_registry.py  Every setting declared once (SETTINGS): meaning, default, required, secret.
    contracts.py    The published JSON Schemas (contracts/schemas), read on first use (OpenAPI, tests).
    telemetry.py    Application Insights on the first invocation, only when configured; gauges.
    queues.py       Queue names the functions bind to.
    problems.py     RFC 9457 problem details (for the HTTP adapters only).
    redaction.py    Users in telemetry as a hash.
    common/         One home per rule: timestamps (clock), GUID/UPN (ids), field validators (fields), TLS
                    context (tls), Retry-After (retry_after), https-or-loopback URLs (urls), the Standard
                    Webhooks signer (standard_webhooks).
    exceptions.py   Every error the app raises on purpose: permanent versus transient, classified once.
"""

"""Validation against the published contracts (contracts/schemas), for every kind of test."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from shared import queues
from shared.contracts import load_schema, schema_names

# What each queue carries, by schema; the webhook receiver's deliveries are WEBHOOK_BODY.
QUEUE_SCHEMAS = {
    queues.APPOINTMENTS: "appointments-message.json",
    queues.JOIN_URLS: "join-url-result.json",
    queues.APPOINTMENTS_REJECTED: "rejection.json",
    queues.WEBHOOK_OUTBOX: "webhook-outbox-message.json",
    queues.WEBHOOK_DEAD_LETTER: "webhook-dead-letter.json",
    queues.ATTENDANCE: "attendance.json",
}
WEBHOOK_BODY = "webhook-body.json"


@cache
def _registry() -> Registry:
    resources = [(load_schema(name)["$id"], Resource.from_contents(load_schema(name))) for name in schema_names()]
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    """A validator for one schema file, its references resolved among the contract files only (no fetching)."""
    return Draft202012Validator(load_schema(name), registry=_registry())


def errors(name: str, instance: Any) -> list[str]:
    """Every violation of schema `name` by `instance`, as readable lines (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator(name).iter_errors(instance)]


def assert_valid(name: str, instance: Any) -> None:
    """Fail with every violation when `instance` is not valid against schema `name`."""
    found = errors(name, instance)
    assert not found, f"not valid against {name}:\n  " + "\n  ".join(found) + f"\n{json.dumps(instance)[:2000]}"


def assert_message_valid(queue: str, text: str) -> None:
    """A queue message (decoded text) is valid against its queue's schema; an outbox message's body too."""
    doc = json.loads(text)
    assert_valid(QUEUE_SCHEMAS[queue], doc)
    if queue == queues.WEBHOOK_OUTBOX:
        assert_valid(WEBHOOK_BODY, json.loads(doc["body"]))

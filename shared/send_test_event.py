"""Operator command: send one test appointment event to a deployed app, signed in as yourself, and wait for it.

    python -m shared.send_test_event --account <storage account> --organizer <UPN or object id>
                                     (--meeting-id <onlineMeetingId> | --join-web-url <url>) [--wait 120]
                                     [--connection-string ...]   (instead of --account: a local stack)

Shared keys are off on the deployed storage account, so the event goes in with your Entra sign-in
(azure-identity DefaultAzureCredential: `az login`, azd, VS Code or environment credentials), base64-encoded as
the queue trigger expects. Your account needs a queue data role on the account: *Storage Queue Data Message
Sender* to send, and *Reader* rights to see the answer (*Storage Queue Data Contributor*, which Bicep gives
OPERATOR_PRINCIPAL_ID, has both). The command then watches `join-urls` and `appointments-rejected` for the
event's outcome and prints it; exit status 0 for a join link, 1 for a rejection, 2 when nothing came in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import TextIO

from shared import queues
from shared.settings import StorageConnection
from shared.storage.queue_client import message_bytes, queue_client, send_creating


def build_event(organizer: str, *, meeting_id: str | None = None, join_web_url: str | None = None,
               event_id: str | None = None) -> dict[str, str]:
    """A contract-v1 `appointment.created` event for a meeting that exists (no callbackUrl: WEBHOOK_URL gets it)."""
    event_id = event_id or f"test-{uuid.uuid4()}"
    event = {"id": event_id, "type": "appointment.created", "appointmentId": f"{event_id}-appointment",
             "organizer": organizer}
    if meeting_id:
        event["onlineMeetingId"] = meeting_id
    if join_web_url:
        event["joinWebUrl"] = join_web_url
    return event


async def _find(conn: StorageConnection, queue: str, event_id: str) -> dict[str, object] | None:
    from azure.core.exceptions import ResourceNotFoundError

    async with queue_client(conn, queue) as client:
        try:
            messages = await client.peek_messages(max_messages=32)
        except ResourceNotFoundError:
            return None
    for message in messages:
        try:
            doc = json.loads(message_bytes(message))
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("eventId") == event_id:
            return doc
    return None


async def send_and_wait(conn: StorageConnection, event: dict[str, str], *, wait_seconds: float,
                        out: TextIO) -> int:
    """Send the event; print its result or rejection when one shows up (peeked, so it stays for the scheduler)."""
    async with queue_client(conn, queues.APPOINTMENTS) as client:
        await send_creating(client, json.dumps(event))
    out.write(f"sent {event['id']} to {queues.APPOINTMENTS}\n")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        result = await _find(conn, queues.JOIN_URLS, event["id"])
        if result is not None:
            out.write(f"join link ready for {result.get('appointmentId')} (on {queues.JOIN_URLS}; the link "
                      "itself is not printed)\n")
            return 0
        rejection = await _find(conn, queues.APPOINTMENTS_REJECTED, event["id"])
        if rejection is not None:
            out.write(f"rejected: reason={rejection.get('reason')} detail={rejection.get('detail')} "
                      "(docs/runbooks.md, appointments-rejected)\n")
            return 1
        await asyncio.sleep(2)
    out.write(f"no outcome within {wait_seconds:.0f} s: look in Application Insights for event_id {event['id']}, "
              "and in appointments-poison (docs/runbooks.md)\n")
    return 2


def _connection(account: str | None, connection_string: str | None) -> StorageConnection:
    if connection_string:
        return StorageConnection(connection_string=connection_string)
    if not account:
        raise SystemExit("pass --account <storage account name> (azd env get-value AZURE_STORAGE_ACCOUNT_NAME) "
                         "or --connection-string")
    # No client id: DefaultAzureCredential, i.e. the operator's own sign-in.
    return StorageConnection(queue_service_uri=f"https://{account}.queue.core.windows.net")


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Parse arguments, send, wait, print the outcome."""
    parser = argparse.ArgumentParser(prog="python -m shared.send_test_event", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--account", help="the deployment's storage account name")
    parser.add_argument("--connection-string", help="instead of --account (the local stack)")
    parser.add_argument("--organizer", required=True, help="a connected organizer's UPN or object id")
    meeting = parser.add_mutually_exclusive_group(required=True)
    meeting.add_argument("--meeting-id", help="onlineMeetingId of a meeting that organizer owns")
    meeting.add_argument("--join-web-url", help="or its join URL")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for the outcome (default 120)")
    args = parser.parse_args(argv)
    event = build_event(args.organizer, meeting_id=args.meeting_id, join_web_url=args.join_web_url)
    return asyncio.run(send_and_wait(_connection(args.account, args.connection_string), event,
                                     wait_seconds=args.wait, out=out))


if __name__ == "__main__":
    sys.exit(main())

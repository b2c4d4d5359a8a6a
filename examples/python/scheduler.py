"""A scheduling system's side, in Python: send an appointment event, read its result, verify a webhook.

    python examples/python/scheduler.py --appointment-id apt-1 --organizer scheduler@contoso.com \
        --join-web-url 'https://teams.microsoft.com/l/meetup-join/...'

In Azure, set STORAGE_QUEUE_URL=https://<account>.queue.core.windows.net (DefaultAzureCredential signs in; the
scheduler's principal holds Storage Queue Data Message Sender on appointments and Message Processor on
join-urls). Locally, set STORAGE_CONNECTION_STRING to Azurite's. WEBHOOK_SECRET is the app's whsec_ secret.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from standardwebhooks import Webhook


def queue(name: str, **kwargs: Any) -> QueueClient:
    """A queue client: Entra ID in Azure (DefaultAzureCredential), a connection string locally."""
    connection_string = os.environ.get("STORAGE_CONNECTION_STRING")
    if connection_string:
        return QueueClient.from_connection_string(connection_string, name, **kwargs)
    from azure.identity import DefaultAzureCredential

    return QueueClient(os.environ["STORAGE_QUEUE_URL"], name, credential=DefaultAzureCredential(), **kwargs)


def send_event(event: dict[str, Any]) -> None:
    """Step 1: the event on `appointments`, base64-encoded as the Functions host expects."""
    queue("appointments", message_encode_policy=TextBase64EncodePolicy()).send_message(json.dumps(event))


def read_result(appointment_id: str, timeout: float) -> dict[str, Any]:
    """Step 2: this appointment's result from `join-urls` (received, then deleted once handled)."""
    results = queue("join-urls")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in results.receive_messages(messages_per_page=32, visibility_timeout=30):
            result = json.loads(base64.b64decode(message.content))
            if result.get("appointmentId") == appointment_id:
                results.delete_message(message)
                return result
            # Someone else's result: a real scheduler handles every one; here it goes back for its owner.
            results.update_message(message, visibility_timeout=0)
        time.sleep(0.5)
    raise TimeoutError(f"no result for {appointment_id} within {timeout:.0f} s")


# --8<-- [start:verify]
class _Hooks(BaseHTTPRequestHandler):
    secret = ""
    received: ClassVar[list[dict[str, Any]]] = []  # one process, one event: shared by the handler instances

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            # Step 3: verify the Standard Webhooks signature before trusting anything in the body.
            payload = Webhook(self.secret).verify(body, dict(self.headers.items()))
        except Exception:
            self.send_response(401)
            self.end_headers()
            return
        self.received.append({"id": self.headers["webhook-id"], "payload": payload})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass
# --8<-- [end:verify]


def main() -> int:
    """Send one event with this process as its webhook destination, and wait for the result and the webhook."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appointment-id", default=f"apt-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--organizer", required=True)
    meeting = parser.add_mutually_exclusive_group(required=True)
    meeting.add_argument("--online-meeting-id")
    meeting.add_argument("--join-web-url")
    parser.add_argument("--listen-port", type=int, default=0, help="webhook endpoint port (0: any free one)")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()

    _Hooks.secret = os.environ["WEBHOOK_SECRET"].split(",")[0]
    server = HTTPServer(("127.0.0.1", args.listen_port), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    event = {"id": f"evt-{uuid.uuid4()}", "type": "appointment.created", "appointmentId": args.appointment_id,
             "organizer": args.organizer,
             # The app posts this event's webhook here (the host must be on WEBHOOK_ALLOWED_HOSTS).
             "callbackUrl": f"http://127.0.0.1:{server.server_address[1]}/hooks"}
    if args.online_meeting_id:
        event["onlineMeetingId"] = args.online_meeting_id
    else:
        event["joinWebUrl"] = args.join_web_url
    send_event(event)
    print(f"sent {event['id']} for {args.appointment_id}")
    result = read_result(args.appointment_id, args.timeout)
    print(f"result: {result['joinUrl']}")
    deadline = time.monotonic() + args.timeout
    while not _Hooks.received and time.monotonic() < deadline:
        time.sleep(0.2)
    server.shutdown()
    if not _Hooks.received:
        print("no webhook arrived", file=sys.stderr)
        return 1
    hook = _Hooks.received[0]
    print(f"webhook {hook['id']} {hook['payload']['type']} signature valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())

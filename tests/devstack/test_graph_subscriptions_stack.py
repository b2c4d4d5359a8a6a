"""On the local stack (real Entra tokens, the Graph emulator over HTTPS as `make run` serves it): a subscription is
validated, the organizer's edit in "Outlook" is delivered, and a lifecycle event fired by the admin call arrives."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.devstack.test_graph_meeting_writes import SCHEDULER, _tls, token

pytestmark = pytest.mark.e2e
SCOPES = "https://graph.microsoft.com/Calendars.ReadWrite"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


class _Endpoint(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        validation = parse_qs(parts.query).get("validationToken")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if validation:
            answer = validation[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            return
        self.received.append((parts.path, json.loads(body)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    handler = type("Handler", (_Endpoint,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _values(received: list[tuple[str, dict[str, Any]]], path: str) -> list[dict[str, Any]]:
    return [v for p, body in received if p == path for v in body["value"]]


def _wait(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_subscription_on_the_stack_delivers_organizer_edits_and_lifecycle(stack: dict[str, Any], endpoint: Any) -> None:
    base, received = endpoint
    headers = {"Authorization": f"Bearer {token(stack, SCHEDULER, SCOPES)}", **IMMUTABLE}
    with httpx.Client(base_url=stack["graph"]["base_url"], verify=_tls(stack), headers=headers) as graph, \
            httpx.Client(base_url=stack["graph"]["admin_url"] + "/", verify=_tls(stack)) as admin:
        admin.delete("subscriptions").raise_for_status()
        made = graph.post("/subscriptions", json={
            "changeType": "created,updated,deleted", "notificationUrl": f"{base}/notify",
            "lifecycleNotificationUrl": f"{base}/lifecycle", "resource": "me/events", "clientState": "s3cret",
            "expirationDateTime": (datetime.now(UTC) + timedelta(days=6)).isoformat()})
        assert made.status_code == 201, made.text
        sub = made.json()
        event = graph.post("/me/events", json={
            "subject": "Consult", "start": {"dateTime": "2027-04-01T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2027-04-01T09:30:00", "timeZone": "UTC"}, "isOnlineMeeting": True,
            "onlineMeetingProvider": "teamsForBusiness"}).json()
        moved = admin.post(f"events/{event['id']}/organizer-edit",
                           json={"start": "2027-04-02T09:00:00", "end": "2027-04-02T09:30:00"})
        assert moved.status_code == 200
        assert admin.post("subscriptions/settle", json={"timeout_seconds": 10}).json()["settled"]
        changes = _values(received, "/notify")
        assert [(c["changeType"], c["resourceData"]["id"], c["clientState"]) for c in changes] == [
            ("created", event["id"], "s3cret"), ("updated", event["id"], "s3cret")]
        # The notification's @odata.id reads the event back with the same token
        again = graph.get("/" + changes[-1]["resourceData"]["@odata.id"])
        assert again.status_code == 200 and again.json()["start"]["dateTime"].startswith("2027-04-02T09:00:00")
        fired = admin.post(f"subscriptions/{sub['id']}/lifecycle", json={"event": "missed"})
        assert fired.status_code == 202
        _wait(lambda: _values(received, "/lifecycle"))
        assert _values(received, "/lifecycle")[0]["lifecycleEvent"] == "missed"
        assert graph.delete(f"/subscriptions/{sub['id']}").status_code == 204

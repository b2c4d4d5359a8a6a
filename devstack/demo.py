"""`make demo`: send sample appointments through the real queue and print the join URLs that arrive."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from devstack.stack import load_endpoints, stack_health, start_stack, stop_stack

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = REPO_ROOT / "devstack" / "seed"


def sample_events(run_id: str) -> list[tuple[str, str]]:
    """One appointment per seeded meeting, in each envelope the app accepts: (event id, message text)."""
    meetings = json.loads((SEED / "meetings.json").read_text())
    users = {u["oid"]: u for u in json.loads((SEED / "directory.json").read_text())["users"]}
    events: list[tuple[str, str]] = []
    for n, meeting in enumerate(meetings):
        event_id = f"demo-{run_id}-{n}"
        data: dict[str, Any] = {"appointmentId": f"apt-{run_id}-{n}", "organizer": users[meeting["organizer"]]["upn"]}
        if n == 0:
            data["onlineMeetingId"] = meeting["id"]
            text = json.dumps({"id": event_id, "type": "appointment.created", **data})
        elif n == 1:
            data["joinWebUrl"] = meeting["joinWebUrl"]  # resolved to the meeting id through Graph
            text = json.dumps({"specversion": "1.0", "id": event_id, "source": "/scheduling/demo",
                               "type": "appointment.created", "datacontenttype": "application/json", "data": data})
        else:
            data["onlineMeetingId"] = meeting["id"]
            text = json.dumps({"id": event_id, "eventType": "appointment.created", "subject": data["appointmentId"],
                               "dataVersion": "1.0", "eventTime": "2026-11-21T09:00:00Z", "data": data})
        events.append((event_id, text))
    return events


def connect_organizers(endpoints: dict[str, Any], services: Any) -> None:
    """Connect each seeded organizer not yet in the token vault, by device code, as an admin would once.

    The organizer's part (opening the verification page and signing in) is played by the Entra emulator's
    admin API; with `make run`, a person does it in the browser at /api/auth/connect instead.
    """
    import ssl

    import httpx

    from shared.identity.vault_acquirer import MsalClients
    from shared.organizers import connect_device

    organizers = {u["oid"]: u["upn"] for u in json.loads((SEED / "directory.json").read_text())["users"]}
    needed = sorted({organizers[m["organizer"]] for m in json.loads((SEED / "meetings.json").read_text())})
    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    with httpx.Client(base_url=endpoints["entra"]["admin_url"] + "/", verify=verify, timeout=10) as entra:
        for upn in needed:
            entry = services.vault.get(upn)
            if entry is not None and entry.status == "connected":
                continue

            def approve(flow: dict[str, Any], upn: str = upn) -> None:
                entra.post("device/approve", json={"user_code": flow["user_code"], "user": upn}).raise_for_status()

            print(f"connecting organizer {upn} by device code (the emulator approves it as {upn} would):")
            code = connect_device(services.settings, services.vault, MsalClients(services.settings), upn,
                                  sys.stdout, approve)
            if code != 0:
                raise SystemExit(f"could not connect {upn}")
    print()


async def run_demo(endpoints: dict[str, Any], timeout: float) -> int:
    """Enqueue the samples, run the app until each has its answer, print them."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import BinaryBase64DecodePolicy, TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueServiceClient

    from devstack.harness import LocalHost

    for key, value in endpoints["settings"].items():
        os.environ[key] = value
    import function_app

    conn = endpoints["azurite"]["connection_string"]
    if function_app.services.settings.credential_mode == "vault":
        await asyncio.to_thread(connect_organizers, endpoints, function_app.services)
    run_id = uuid.uuid4().hex[:6]
    events = sample_events(run_id)
    wanted = {event_id for event_id, _ in events}
    async with QueueServiceClient.from_connection_string(conn) as service, \
            LocalHost(function_app.app, connection_string=conn, host_json=REPO_ROOT / "host.json"):
        inbox = service.get_queue_client("appointments", message_encode_policy=TextBase64EncodePolicy())
        outputs = {name: service.get_queue_client(name, message_decode_policy=BinaryBase64DecodePolicy())
                   for name in ("join-urls", "appointments-rejected")}

        async def collect(wanted: set[str], answers: dict[str, dict[str, Any]],
                          webhooks: dict[str, dict[str, Any]]) -> None:
            deadline = time.monotonic() + timeout
            while (wanted - answers.keys() or wanted - webhooks.keys()) and time.monotonic() < deadline:
                webhooks.update(await _webhooks_received(endpoints, wanted))
                for name, queue in outputs.items():
                    try:
                        async for message in queue.receive_messages(max_messages=32, visibility_timeout=5):
                            record = json.loads(message.content)
                            if record.get("eventId") in wanted:
                                answers[record["eventId"]] = {"queue": name, **record}
                                await queue.delete_message(message)
                    except ResourceNotFoundError:  # the queue appears with the first output written to it
                        continue
                await asyncio.sleep(0.2)

        for _, text in events:
            await inbox.send_message(text)
        print(f"sent {len(events)} appointments (plain JSON, CloudEvents, Event Grid) to 'appointments'")
        answers: dict[str, dict[str, Any]] = {}
        webhooks: dict[str, dict[str, Any]] = {}
        await collect(wanted, answers, webhooks)
        _print_answers(events, answers, webhooks, timeout)
        ok = (all(a["queue"] == "join-urls" for a in answers.values()) and len(answers) == len(events)
              and len(webhooks) == len(events) and all(h["valid"] for h in webhooks.values()))
        arrived = sum(a["queue"] == "join-urls" for a in answers.values())
        print(f"\n{arrived}/{len(events)} join URLs arrived in 'join-urls'")
        if function_app.services.settings.meeting_management:
            ok = await _lifecycle(inbox, collect, run_id) and ok
    await function_app.services.aclose()
    return 0 if ok else 1


def lifecycle_events(run_id: str) -> list[tuple[str, str]]:
    """One appointment with no meeting: created, rescheduled, cancelled (event id, message text)."""
    appointment = f"apt-{run_id}-life"
    base = {"appointmentId": appointment, "organizer": "scheduler@contoso.test"}
    created = {"id": f"demo-{run_id}-created", "type": "appointment.created", **base, "sequence": 1,
               "subject": "Video consultation", "startDateTime": "2026-12-01T09:00:00+01:00",
               "endDateTime": "2026-12-01T09:30:00+01:00",
               "participants": [{"user": "dr.adams@contoso.test", "role": "presenter"}]}
    moved = {"id": f"demo-{run_id}-moved", "type": "appointment.rescheduled", **base, "sequence": 2,
             "startDateTime": "2026-12-02T14:00:00+01:00", "endDateTime": "2026-12-02T14:30:00+01:00"}
    cancelled = {"id": f"demo-{run_id}-cancelled", "type": "appointment.cancelled", **base, "sequence": 3}
    return [(doc["id"], json.dumps(doc)) for doc in (created, moved, cancelled)]


async def _lifecycle(inbox: Any, collect: Any, run_id: str) -> bool:
    """The appointment lifecycle: each step sent once the previous one's webhook has arrived."""
    print("\nan appointment with no meeting (MEETING_MANAGEMENT=true: the app creates the Teams meeting):")
    ok = True
    for event_id, text in lifecycle_events(run_id):
        answers: dict[str, dict[str, Any]] = {}
        webhooks: dict[str, dict[str, Any]] = {}
        await inbox.send_message(text)
        await collect({event_id}, answers, webhooks)
        answer, hook = answers.get(event_id), webhooks.get(event_id)
        kind = json.loads(text)["type"]
        if answer is None or hook is None or answer["queue"] != "join-urls":
            print(f"  {kind}: no answer (see the rejected queue)" if answer is None else
                  f"  {kind}: {answer.get('reason')}: {answer.get('detail')}")
            ok = False
            continue
        print(f"  {kind}  meeting={answer['onlineMeetingId'][:24]}…  created by the app: "
              f"{answer['meetingCreatedByApp']}  status={answer['status']}")
        if answer["status"] == "scheduled":
            print(f"    {answer['startDateTime']} – {answer['endDateTime']}")
            print(f"    client link (joinUrl):         {answer['joinUrl']}")
            print(f"    staff link (organizerJoinUrl): {answer['organizerJoinUrl']}")
        print(f"    webhook {hook['webhook_id']}  {hook['type']}  signature {'valid' if hook['valid'] else 'INVALID'}")
        ok = ok and hook["valid"]
    return ok


def _print_answers(events: list[tuple[str, str]], answers: dict[str, dict[str, Any]],
                   webhooks: dict[str, dict[str, Any]], timeout: float) -> None:
    print()
    for event_id, _ in events:
        answer = answers.get(event_id)
        if answer is None:
            print(f"  {event_id}: no answer within {timeout:.0f}s")
        elif answer["queue"] == "join-urls":
            print(f"  {answer['appointmentId']}  organizer={answer['organizer']}\n    join URL: {answer['joinUrl']}")
        else:
            print(f"  {answer.get('appointmentId')}: rejected ({answer['reason']}): {answer['detail']}")
    print("\nwebhooks received by the local scheduling system (signatures checked with the standardwebhooks package):")
    for event_id, _ in events:
        hook = webhooks.get(event_id)
        if hook is None:
            print(f"  {event_id}: no webhook within {timeout:.0f}s")
        else:
            print(f"  {hook['webhook_id']}  {hook['type']}  signature {'valid' if hook['valid'] else 'INVALID'}")


async def _webhooks_received(endpoints: dict[str, Any], event_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Deliveries the local receiver recorded for these events, each verified independently."""
    import ssl

    import httpx
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    async with httpx.AsyncClient(verify=verify, timeout=10) as client:
        answer = await client.get(endpoints["receiver"]["admin_url"] + "/deliveries")
    secret = endpoints["settings"]["WEBHOOK_SECRET"].split(",")[0]
    found: dict[str, dict[str, Any]] = {}
    for delivery in answer.json()["deliveries"]:
        event_id = (delivery.get("webhook_id") or "").rsplit("_", 1)[0]
        if event_id not in event_ids or delivery["status"] != 200:
            continue
        headers = {"webhook-id": delivery["webhook_id"], "webhook-timestamp": delivery["timestamp"],
                   "webhook-signature": delivery["signature"]}
        try:
            Webhook(secret).verify(delivery["raw_body"], headers)
            valid = True
        except WebhookVerificationError:
            valid = False
        found[event_id] = {"webhook_id": delivery["webhook_id"], "type": delivery["type"], "valid": valid}
    return found


def main(argv: list[str] | None = None) -> None:
    """Start the stack if needed, run the demo, stop what it started."""
    parser = argparse.ArgumentParser(prog="python -m devstack.demo", description=__doc__)
    parser.add_argument("--state-dir", default=".devstack", type=Path)
    parser.add_argument("--timeout", default=60.0, type=float)
    args = parser.parse_args(argv)
    try:
        started_here = not all(stack_health(load_endpoints(args.state_dir)).values())
    except Exception:
        started_here = True
    endpoints = start_stack(args.state_dir)
    try:
        code = asyncio.run(run_demo(endpoints, args.timeout))
    finally:
        if started_here:
            stop_stack(args.state_dir)
    sys.exit(code)


if __name__ == "__main__":
    main()

"""`make demo`: organizers of two tenants connect, sample appointments go through the real queue, and the join
URLs that arrive are printed. The app proves itself to Entra with its managed identity: no client secret."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import re
import ssl
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from devstack.stack import load_endpoints, stack_health, start_stack, stop_stack

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = REPO_ROOT / "devstack" / "seed"
FUNCTION_KEY = "local-dev-function-key"
PASSWORD = "Local-Dev-Passw0rd!"  # noqa: S105 - the seeded test users' password (local stack only)


def _directory() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((SEED / "directory.json").read_text())
    return doc


def _users() -> dict[str, dict[str, Any]]:
    """Every seeded user by oid, with their tenant."""
    directory = _directory()
    return {u["oid"]: {**u, "tenant_id": t["tenant_id"], "tenant_name": t.get("display_name", t["tenant_id"])}
            for t in (directory, *directory.get("customer_tenants", [])) for u in t.get("users", [])}


def sample_events(run_id: str, allowed_tenants: tuple[str, ...]) -> list[tuple[str, str]]:
    """One appointment per seeded meeting of an allowed tenant, in each envelope the app accepts (events of a
    customer tenant name it in tenantId): (event id, message text)."""
    users = _users()
    meetings = [m for m in json.loads((SEED / "meetings.json").read_text())
                if users[m["organizer"]]["tenant_id"] in allowed_tenants]
    events: list[tuple[str, str]] = []
    for n, meeting in enumerate(meetings):
        organizer = users[meeting["organizer"]]
        event_id = f"demo-{run_id}-{n}"
        data: dict[str, Any] = {"appointmentId": f"apt-{run_id}-{n}", "organizer": organizer["upn"]}
        if organizer["tenant_id"] != _directory()["tenant_id"]:
            data["tenantId"] = organizer["tenant_id"]
        if n == 1:
            data["joinWebUrl"] = meeting["joinWebUrl"]  # resolved to the meeting id through Graph
            text = json.dumps({"specversion": "1.0", "id": event_id, "source": "/scheduling/demo",
                               "type": "appointment.created", "datacontenttype": "application/json", "data": data})
        elif n % 2:
            data["onlineMeetingId"] = meeting["id"]
            text = json.dumps({"id": event_id, "eventType": "appointment.created", "subject": data["appointmentId"],
                               "dataVersion": "1.0", "eventTime": "2026-11-21T09:00:00Z", "data": data})
        else:
            data["onlineMeetingId"] = meeting["id"]
            text = json.dumps({"id": event_id, "type": "appointment.created", **data})
        events.append((event_id, text))
    return events


def through_entra(endpoints: dict[str, Any], base_url: str, link: str, user: str) -> str:
    """Open one of the app's links as a person would in a browser: the app sends them to Entra, they sign in and
    accept on its page, Entra sends them back to the app. Returns the heading of the app's page."""
    import httpx

    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    with httpx.Client(verify=verify, timeout=30) as browser:  # keeps the app's cookie, follows nothing itself
        entra = browser.get(f"{base_url}{link}").headers["location"]
        page = browser.get(entra).text
        form = re.search(r'<form method="post" action="([^"]+)"', page)
        ctx = re.search(r'name="ctx"[^>]*value="([^"]*)"', page)
        if form is None or ctx is None:
            raise SystemExit(f"no sign-in page at {entra}")
        back = browser.post(urljoin(entra, form.group(1)),
                            data={"ctx": ctx.group(1), "username": user, "password": PASSWORD, "action": "accept"})
        # The redirect URI names localhost:7071 (registered on the app); the app listens here, same path.
        redirect_uri = os.environ["AUTH_REDIRECT_URI"]
        answer = browser.get(base_url + back.headers["location"][len(redirect_uri.rsplit("/api/", 1)[0]):])
    heading = re.search(r"<h1>([^<]+)</h1>", answer.text)
    return heading.group(1) if heading else str(answer.status_code)


def grant_admin_consent(endpoints: dict[str, Any], base_url: str, tenant: str, admin: str) -> None:
    """A customer tenant's administrator opens the app's admin-consent link and accepts."""
    link = f"/api/auth/admin-consent?tenant={tenant}&code={FUNCTION_KEY}"
    print(f"{admin}, administrator of tenant {tenant}, opens the app's admin-consent link "
          f"{base_url}{link.split('&code=')[0]}&code=…")
    print(f"  {through_entra(endpoints, base_url, link, admin)}\n")


def connect_organizers(endpoints: dict[str, Any], base_url: str, services: Any,
                       organizers: list[dict[str, Any]]) -> None:
    """Each organizer not yet in the token vault opens the connect link and signs in, once (the app redeems the
    code with its managed identity's federated credential). Headless setups use `shared.organizers
    connect-device` instead; with `make run`, a person does this in the browser."""
    for user in organizers:
        entry = services.vault.get(user["upn"], user["tenant_id"])
        if entry is not None and entry.status == "connected":
            continue
        link = f"/api/auth/connect?organizer={user['upn']}&code={FUNCTION_KEY}"
        print(f"{user['upn']} ({user['tenant_name']}) opens the connect link and signs in: "
              f"{through_entra(endpoints, base_url, link, user['upn'])}")
    print()


async def run_demo(endpoints: dict[str, Any], timeout: float) -> int:
    """Consent, connect, enqueue the samples, run the app until each has its answer, print them."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import BinaryBase64DecodePolicy, TextBase64EncodePolicy
    from azure.storage.queue.aio import QueueServiceClient

    from devstack.harness import LocalHost

    for key, value in endpoints["settings"].items():
        os.environ[key] = value
    # Attendance after the appointment, read as soon as it ends (no grace): the demo plays one session.
    os.environ.update({"ATTENDANCE_REPORTS": "true", "ATTENDANCE_GRACE_MINUTES": "0"})
    import function_app

    services = function_app.services
    settings = services.settings
    secret_free = not settings.client_secret and not endpoints["settings"].get("ENTRA_CLIENT_SECRET")
    print(f"app credential: {settings.app_credential} (managed identity {settings.managed_identity_client_id}), "
          f"{'no client secret in the settings' if secret_free else 'A CLIENT SECRET IS SET'}; tenancy: "
          f"{settings.tenancy}, allowed tenants {', '.join(settings.allowed_tenants)}\n")
    conn = endpoints["azurite"]["connection_string"]
    users = _users()
    meetings = json.loads((SEED / "meetings.json").read_text())
    home = _directory()["tenant_id"]
    organizers = sorted({m["organizer"] for m in meetings if users[m["organizer"]]["tenant_id"]
                         in settings.allowed_tenants},
                        key=lambda oid: (users[oid]["tenant_id"] != home, users[oid]["tenant_id"], users[oid]["upn"]))
    run_id = uuid.uuid4().hex[:6]
    events = sample_events(run_id, settings.allowed_tenants)
    wanted = {event_id for event_id, _ in events}
    answers: dict[str, dict[str, Any]] = {}
    async with QueueServiceClient.from_connection_string(conn) as service, \
            LocalHost(function_app.app, connection_string=conn, host_json=REPO_ROOT / "host.json",
                      http_port=0) as host:
        print(f"Azure's Python worker (azure-functions-runtime {importlib.metadata.version('azure-functions-runtime')},"
              f" Python {platform.python_version()}) indexed {len(host.functions)} functions; every invocation "
              "below runs in it\n")
        for tenant in settings.allowed_tenants:
            admins = [u for u in users.values() if u["tenant_id"] == tenant and u.get("admin")]
            if tenant != home and admins and settings.credential_mode == "vault":
                await asyncio.to_thread(grant_admin_consent, endpoints, host.http_base_url, tenant, admins[0]["upn"])
        if settings.credential_mode == "vault":
            await asyncio.to_thread(connect_organizers, endpoints, host.http_base_url, services,
                                    [users[oid] for oid in organizers])
        inbox = service.get_queue_client("appointments", message_encode_policy=TextBase64EncodePolicy())
        for _, text in events:
            await inbox.send_message(text)
        print(f"sent {len(events)} appointments of {len(organizers)} organizers in {len(settings.allowed_tenants)} "
              "tenants (plain JSON, CloudEvents, Event Grid) to 'appointments'")
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

        webhooks: dict[str, dict[str, Any]] = {}
        await collect(wanted, answers, webhooks)
        ok = _report(events, answers, webhooks, timeout, users)
        if settings.meeting_management:
            ok = await _lifecycle(inbox, collect, run_id) and ok
            ok = await _attendance(endpoints, inbox, collect, run_id) and ok
            ok = await _calendar(endpoints, function_app, host.http_base_url, inbox, collect, run_id) and ok
    await function_app.services.aclose()
    await services.aclose()
    return 0 if ok else 1


def _report(events: list[tuple[str, str]], answers: dict[str, dict[str, Any]], webhooks: dict[str, dict[str, Any]],
            timeout: float, users: dict[str, dict[str, Any]]) -> bool:
    tenant_names = {u["tenant_id"]: u["tenant_name"] for u in users.values()}
    print()
    for event_id, _ in events:
        answer = answers.get(event_id)
        if answer is None:
            print(f"  {event_id}: no answer within {timeout:.0f}s")
        elif answer["queue"] == "join-urls":
            tenant = tenant_names.get(answer.get("tenantId") or "", answer.get("tenantId"))
            print(f"  {answer['appointmentId']}  organizer={answer['organizer']}  tenant={tenant}\n"
                  f"    join URL: {answer['joinUrl']}")
        else:
            print(f"  {answer.get('appointmentId')}: rejected ({answer['reason']}): {answer['detail']}")
    print("\nwebhooks received by the local scheduling system (signatures checked with the standardwebhooks package):")
    for event_id, _ in events:
        hook = webhooks.get(event_id)
        if hook is None:
            print(f"  {event_id}: no webhook within {timeout:.0f}s")
        else:
            print(f"  {hook['webhook_id']}  {hook['type']}  signature {'valid' if hook['valid'] else 'INVALID'}")
    ok = (all(a["queue"] == "join-urls" for a in answers.values()) and len(answers) == len(events)
          and len(webhooks) == len(events) and all(h["valid"] for h in webhooks.values()))
    arrived = [answers[event_id] for event_id, _ in events
               if event_id in answers and answers[event_id]["queue"] == "join-urls"]
    per_tenant = {tenant_names.get(t, t): sum(1 for a in arrived if a.get("tenantId") == t)
                  for t in dict.fromkeys(a.get("tenantId") for a in arrived)}
    print(f"\n{len(arrived)}/{len(events)} join URLs arrived in 'join-urls' "
          f"({', '.join(f'{name}: {count}' for name, count in per_tenant.items())})")
    return ok


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


async def _attendance(endpoints: dict[str, Any], inbox: Any, collect: Any, run_id: str) -> bool:
    """An appointment that ends now; the Graph emulator plays its session, and the attendance webhook arrives."""
    from datetime import UTC, datetime, timedelta

    import httpx

    now = datetime.now(UTC)
    appointment, event_id = f"apt-{run_id}-att", f"demo-{run_id}-att"
    await inbox.send_message(json.dumps({
        "id": event_id, "type": "appointment.created", "appointmentId": appointment,
        "organizer": "scheduler@contoso.test", "sequence": 1,
        "startDateTime": (now - timedelta(minutes=30)).isoformat(),
        "endDateTime": (now + timedelta(seconds=5)).isoformat(),
        "clients": [{"displayName": "Pat", "email": "pat@example.org"}]}))
    answers: dict[str, dict[str, Any]] = {}
    await collect({event_id}, answers, {})
    if event_id not in answers or not answers[event_id].get("onlineMeetingId"):
        print("\nattendance: the appointment got no meeting")
        return False
    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    started = now - timedelta(minutes=28)
    session = {"start": started.isoformat(), "attendees": [
        {"user": "scheduler@contoso.test", "role": "Organizer", "joinOffsetSeconds": 0, "seconds": 1500},
        {"email": "pat@example.org", "displayName": "Pat", "joinOffsetSeconds": 180, "seconds": 1200}]}
    async with httpx.AsyncClient(verify=verify, timeout=10) as client:
        played = await client.post(f"{endpoints['graph']['admin_url']}/meetings/"
                                   f"{answers[event_id]['onlineMeetingId']}/sessions", json=session)
        print("\nafter the appointment (ATTENDANCE_REPORTS=true): the emulator plays its session "
              f"({played.status_code}): the organizer 25 min, the client 20 min")
        hook = await _first_webhook(client, endpoints, "appointment.attendance", appointment)
    if hook is None:
        return False
    data = hook["body"]["data"]
    print(f"  webhook {hook['webhook_id']}  appointment.attendance  outcome={data['outcome']}  "
          f"organizer {data['organizerAttendance']['secondsPresent']} s, "
          f"clients {[c['secondsPresent'] for c in data['clients']]} s")
    return bool(data["outcome"] == "attended")


async def _first_webhook(client: Any, endpoints: dict[str, Any], kind: str, appointment: str) -> dict[str, Any] | None:
    """The first webhook of `kind` for the appointment the local receiver got, waited for up to 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        deliveries = (await client.get(endpoints["receiver"]["admin_url"] + "/deliveries")).json()["deliveries"]
        hooks = [d for d in deliveries if d["type"] == kind and d["body"]["data"]["appointmentId"] == appointment]
        if hooks:
            return dict(hooks[0])
        await asyncio.sleep(0.5)
    print(f"  no {kind} webhook within 60 s")
    return None


async def _calendar(endpoints: dict[str, Any], function_app: Any, base_url: str, inbox: Any, collect: Any,
                    run_id: str) -> bool:
    """MEETING_KIND=calendar: the appointment on the organizer's calendar; the staff member moves it in "Outlook"
    (the Graph emulator's organizer-edit) and the scheduler hears appointment.rescheduled_by_organizer."""
    import httpx

    from shared.services import Services
    from shared.settings import load_settings

    os.environ.update({"MEETING_KIND": "calendar", "GRAPH_NOTIFICATION_BASE_URL": f"{base_url}/api"})
    function_app.services = Services(load_settings(os.environ))
    organizer = "scheduler@contoso.test"
    subscription = await function_app.services.subscriptions.ensure(organizer)
    print(f"\nMEETING_KIND=calendar: {organizer}'s calendar subscription (me/events, clientState, lifecycle URL): "
          f"{subscription.state}")
    appointment, event_id = f"apt-{run_id}-cal", f"demo-{run_id}-cal"
    await inbox.send_message(json.dumps({
        "id": event_id, "type": "appointment.created", "appointmentId": appointment, "organizer": organizer,
        "sequence": 1, "subject": "Video consultation", "startDateTime": "2026-12-07T09:00:00Z",
        "endDateTime": "2026-12-07T09:30:00Z"}))
    answers: dict[str, dict[str, Any]] = {}
    await collect({event_id}, answers, {})
    answer = answers.get(event_id)
    if answer is None or not answer.get("joinUrl"):
        print(f"  the calendar appointment got no link: {answer}")
        return False
    print(f"  appointment.created  on the organizer's calendar  {answer['startDateTime']} – {answer['endDateTime']}")
    print(f"    client link (joinUrl): {answer['joinUrl']}")
    verify = ssl.create_default_context(cafile=endpoints["ca_bundle"])
    async with httpx.AsyncClient(verify=verify, timeout=10) as client:
        admin = endpoints["graph"]["admin_url"]
        events = (await client.get(f"{admin}/events", params={"organizer": organizer})).json()
        mine = [e for e in events if any(p.get("value") == appointment for p in e["singleValueExtendedProperties"])]
        if not mine:
            print("  no calendar event found for it")
            return False
        await client.post(f"{admin}/events/{mine[0]['id']}/organizer-edit",
                          json={"start": "2026-12-08T15:00:00", "end": "2026-12-08T15:45:00"})
        print("  the staff member moves it in Outlook to 2026-12-08 15:00–15:45 (the emulator's organizer-edit)")
        hook = await _first_webhook(client, endpoints, "appointment.rescheduled_by_organizer", appointment)
    if hook is None:
        return False
    data = hook["body"]["data"]
    print(f"  webhook {hook['webhook_id']}  appointment.rescheduled_by_organizer  "
          f"{data['startDateTime']} – {data['endDateTime']}  version {data['version']}  "
          f"link held: {data['joinUrl'] == answer['joinUrl']}")
    return True


async def _webhooks_received(endpoints: dict[str, Any], event_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Deliveries the local receiver recorded for these events, each verified independently."""
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

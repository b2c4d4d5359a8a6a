"""The client examples in examples/ run green against the local stack: each sends an event, reads its result
from `join-urls` and verifies the signed webhook the app posts to it (its own callbackUrl)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CARDIOLOGY = "MSo0YzdlMWQyYS05YjNmLTRlNWQtOGE2Yy0xZjJlM2Q0YzViNmEqMCoqMTk6bWVldGluZ19jYXJkaW9sb2d5QHRocmVhZC52Mg=="
REQUIRED = os.environ.get("INFRA_TOOLS_REQUIRED", "") not in ("", "0", "false")


def _node_command() -> list[str]:
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "@azure" / "storage-queue").is_dir():
        message = "node or the example's npm packages are missing: `make install`"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return [node, str(REPO / "examples" / "node" / "scheduler.mjs")]


@pytest.mark.parametrize("language", ["python", "node"])
async def test_example_sends_reads_and_verifies(host, queues_client, stack, language):
    command = ([sys.executable, str(REPO / "examples" / "python" / "scheduler.py")] if language == "python"
               else _node_command())
    env = {**os.environ, "STORAGE_CONNECTION_STRING": stack["azurite"]["connection_string"],
           "WEBHOOK_SECRET": stack["settings"]["WEBHOOK_SECRET"]}
    process = await asyncio.create_subprocess_exec(
        *command, "--appointment-id", f"apt-example-{language}", "--organizer", "scheduler@contoso.test",
        "--online-meeting-id", CARDIOLOGY, "--timeout", "60", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode()
    assert process.returncode == 0, text
    assert "meeting_cardiology" in text and "signature valid" in text


async def test_example_with_an_allowed_https_callback_url_as_in_azure(host, queues_client, stack, receiver_admin):
    # In Azure the app refuses loopback callbacks: the example then names an https URL on WEBHOOK_ALLOWED_HOSTS
    # (here the stack's receiver) and leaves the webhook to it, reading only the result.
    env = {**os.environ, "STORAGE_CONNECTION_STRING": stack["azurite"]["connection_string"],
           "WEBHOOK_SECRET": stack["settings"]["WEBHOOK_SECRET"]}
    callback = stack["receiver"]["url"]
    assert callback.startswith("https://")
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "examples" / "python" / "scheduler.py"), "--appointment-id", "apt-example-https",
        "--organizer", "scheduler@contoso.test", "--online-meeting-id", CARDIOLOGY, "--callback-url", callback,
        "--timeout", "60", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode()
    assert process.returncode == 0, text
    assert f"webhook: sent by the app to {callback}" in text
    await host.drain(timeout=30)
    deliveries = receiver_admin.get("deliveries").json()["deliveries"]
    assert any("apt-example-https" in json.dumps(d) for d in deliveries)

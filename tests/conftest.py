"""Every test: its logs must not contain a token, a secret, a password or a full join URL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import start_stack, stop_stack
from tests.log_scan import APP_LOGGERS, ROOT, CollectingHandler, scan_records, scan_text_file


@pytest.fixture(autouse=True)
def no_secrets_in_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect the app's log records at DEBUG during the test; fail the test if any leaks a credential.

    Scoped to the app's loggers (shared.*, function_app, devstack.harness, root): the emulators and
    third-party clients are not the product. `@pytest.mark.allow_secret_logs` exempts a test that logs
    secrets on purpose (the scanner's own tests).
    """
    handler = CollectingHandler()
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in APP_LOGGERS if name != "root"]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        # Records below a logger's effective level are never created: lower it so INFO/DEBUG lines are seen.
        logger.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    if request.node.get_closest_marker("allow_secret_logs"):
        return
    findings = scan_records(handler.records)
    if findings:
        shown = "\n  ".join(str(f) for f in findings[:10])
        pytest.fail(f"{len(findings)} credential(s) or join link(s) in the logs of this test:\n  {shown}",
                    pytrace=False)


@pytest.fixture(scope="session")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app's HTTP functions served by the harness (a child process, as the host runs it) on a local stack.

    Used by the security and schemathesis tests; started only when one of them runs. The seeded test
    users sign in directly (`dev_password`), so no organizer has to connect first.
    """
    state_dir = tmp_path_factory.mktemp("twin-stack")
    endpoints = start_stack(state_dir, "auto")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **{k: str(v) for k, v in endpoints["settings"].items()}, "CREDENTIAL_MODE": "dev_password",
           "PYTHONPATH": str(ROOT)}
    log_path = state_dir / "harness.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devstack.harness", "--state-dir", str(state_dir),
                                 "--http-port", str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base_url + "/api/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the harness did not serve HTTP:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield {"base_url": base_url, "stack": endpoints, "log": log_path}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_stack(state_dir)
    findings = scan_text_file(log_path)
    assert not findings, "the harness serving the HTTP twin logged credentials:\n" + "\n".join(map(str, findings))


# The seeded front end (devstack/seed/directory.json) that calls the app's API with a user's token.
FRONT_END = {"client_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
             "client_secret": "local-dev-frontend-secret-not-for-production"}


@pytest.fixture(scope="session")
def api_token(twin: dict[str, Any]) -> str:
    """A genuine user token for the app's API from the Entra emulator, as the front end holds it."""
    import ssl

    stack = twin["stack"]
    answer = httpx.post(stack["entra"]["authority"] + "/oauth2/v2.0/token",
                        verify=ssl.create_default_context(cafile=stack["ca_bundle"]),
                        data={"grant_type": "password", **FRONT_END, "username": "scheduler@contoso.test",
                              "password": "Local-Dev-Passw0rd!",
                              "scope": "api://5b1f0c2e-8d4a-4f6b-9c3e-2a7d6e5f4c3b/access_as_user"})
    answer.raise_for_status()
    return str(answer.json()["access_token"])

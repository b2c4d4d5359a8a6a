"""The published documents pass their own linters: `asyncapi validate` (the AsyncAPI CLI) on contracts/asyncapi.yaml
and Spectral's OpenAPI rules on the document the app serves. Both CLIs come from package.json (`make install`),
run offline, and have their telemetry off. A missing CLI skips locally and fails under INFRA_TOOLS_REQUIRED=1
(as `make test` runs)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shared.contracts import ASYNCAPI_DOCUMENT
from shared.http_twin.openapi import openapi_document

pytestmark = pytest.mark.contract
REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "node_modules" / ".bin"
REQUIRED = os.environ.get("INFRA_TOOLS_REQUIRED", "") not in ("", "0", "false")
TIMEOUT_SECONDS = 180


def _cli(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        message = f"{path} is missing: `make install` (npm ci) installs it from package-lock.json"
        if REQUIRED:
            pytest.fail(message + " (INFRA_TOOLS_REQUIRED is set)")
        pytest.skip(message)
    return path


def test_asyncapi_document_passes_asyncapi_validate(tmp_path: Path) -> None:
    # The CLI's usage metrics are off with CI=true; its config file goes to a temporary place, not $HOME.
    env = {**os.environ, "CI": "true", "ASYNCAPI_METRICS_CONFIG_PATH": str(tmp_path / "asyncapi-analytics.json"),
           "NODE_NO_WARNINGS": "1"}
    (tmp_path / "asyncapi-analytics.json").write_text(json.dumps(
        {"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "tests"}))
    completed = subprocess.run([str(_cli("asyncapi")), "validate", str(ASYNCAPI_DOCUMENT), "--fail-severity", "warn"],
                               capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=env, cwd=REPO,
                               check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"asyncapi validate:\n{output}"
    assert "is valid" in output


def test_openapi_document_passes_spectral(tmp_path: Path) -> None:
    document = tmp_path / "openapi.json"
    document.write_text(openapi_document())
    completed = subprocess.run(
        [str(_cli("spectral")), "lint", "--ruleset", str(REPO / "contracts" / ".spectral.yaml"), "--fail-severity",
         "warn", str(document)], capture_output=True, text=True, timeout=TIMEOUT_SECONDS, cwd=REPO, check=False,
        env={**os.environ, "NODE_NO_WARNINGS": "1"})
    assert completed.returncode == 0, f"spectral lint:\n{completed.stdout}{completed.stderr}"


def test_the_asyncapi_document_names_every_published_queue_schema() -> None:
    text = ASYNCAPI_DOCUMENT.read_text()
    for name in ("appointment-event.json", "cloudevent.json", "eventgrid-event.json", "join-url-result.json",
                 "rejection.json", "webhook-body.json"):
        assert f"./schemas/{name}" in text, name
    for address in ("address: appointments", "address: join-urls", "address: appointments-rejected"):
        assert address in text

"""Functional tests import the real function_app with the sample settings and swap in fakes."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sample_env() -> dict[str, str]:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    values["DEV_USERS_FILE"] = str(ROOT / values["DEV_USERS_FILE"])
    values.pop("TLS_CA_BUNDLE")
    return values


for _key, _value in _sample_env().items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def function_app_module():
    import function_app

    return function_app


@pytest.fixture(scope="session")
async def worker(function_app_module):
    """Azure's Python worker with function_app.py indexed, as the host starts it: every call goes through it."""
    from devstack.harness import Worker

    return await Worker.for_script(ROOT / "function_app.py")

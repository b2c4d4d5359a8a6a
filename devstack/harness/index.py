"""The host's function table, read from the worker's function metadata, and app-setting references."""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from typing import Any

from devstack.harness.worker import FunctionMetadata

_SETTING_REF = re.compile(r"%([^%]+)%")


def resolve_settings(value: str) -> str:
    """Replace ``%NAME%`` app-setting references the way the host does for binding expressions."""

    def lookup(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise KeyError(f"binding refers to app setting {m.group(1)!r}, which is not set")
        return os.environ[m.group(1)]

    return _SETTING_REF.sub(lookup, value)


@dataclass
class HostFunction:
    """One function as the host runs it: the worker's metadata for it, and its in-flight queue work."""

    meta: FunctionMetadata
    in_flight: int = 0
    receiving: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        """The function's name, as the worker indexed it."""
        return self.meta.name

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger binding (raw, as in function.json)."""
        return self.meta.trigger

    @property
    def trigger_type(self) -> str:
        """``queueTrigger``, ``httpTrigger``, ``timerTrigger``, ..."""
        return str(self.trigger["type"])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """Output bindings, ``$return`` included."""
        return self.meta.outputs

    @property
    def unsupported_inputs(self) -> list[str]:
        """Input bindings this host cannot supply."""
        return [str(b["name"]) for b in self.meta.inputs]

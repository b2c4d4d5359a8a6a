"""host.json: TimeSpans, and the queue settings the host takes from it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One logger for the whole harness: tests/log_scan.py scans its records for credentials.
log = logging.getLogger("devstack.harness")

MAX_BATCH_SIZE = 32


def parse_timespan(value: str | int | float) -> float:
    """Parse a .NET TimeSpan (``[d.]hh:mm:ss[.fff]``) or a number of seconds into seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip()
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d+)?)", text)
    if not m:
        raise ValueError(f"not a TimeSpan: {value!r}")
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def ci_get(mapping: Mapping[str, Any], key: str, default: Any = None) -> Any:
    # host.json keys are case-insensitive in the real host.
    """A host.json value by key, whatever the key's case."""
    for k, v in mapping.items():
        if k.lower() == key.lower():
            return v
    return default


@dataclass(frozen=True)
class QueueSettings:
    """The ``extensions.queues`` section of host.json, with the host's defaults."""

    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> QueueSettings:
        """Read queue settings from a parsed host.json document."""
        queues = ci_get(ci_get(host_json, "extensions", {}) or {}, "queues", {}) or {}
        batch_size = min(int(ci_get(queues, "batchSize", 16)), MAX_BATCH_SIZE)
        threshold = ci_get(queues, "newBatchThreshold")
        encoding = str(ci_get(queues, "messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError(f"messageEncoding must be 'base64' or 'none', got {encoding!r}")
        return cls(
            max_dequeue_count=int(ci_get(queues, "maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(ci_get(queues, "visibilityTimeout", "00:00:00")),
            batch_size=batch_size,
            new_batch_threshold=batch_size // 2 if threshold is None else int(threshold),
            max_polling_interval=parse_timespan(ci_get(queues, "maxPollingInterval", "00:01:00")),
            message_encoding=encoding,
        )


def load_host_json(host_json: Path | str | Mapping[str, Any]) -> dict[str, Any]:
    """Return host.json as a dict, reading it from disk when given a path (missing file → ``{}``)."""
    if isinstance(host_json, Mapping):
        return dict(host_json)
    path = Path(host_json)
    if not path.exists():
        log.warning("host.json not found at %s; using the host's defaults", path)
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded

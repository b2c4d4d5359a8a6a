"""Find credentials and join links in log records: tokens, secrets, passwords, full join URLs.

Used by the autouse fixture in tests/conftest.py (every test) and by the chaos tests (the harness's log
file). Precise on purpose: hashed ids (hex), redacted URLs (`https://host/…`) and format prefixes in
messages (`whsec_<base64>`) are not findings.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Loggers whose records are the app's (or the harness's, which logs the app's failures): the scan covers
# these and the root logger. Emulators and third-party clients log what they like.
APP_LOGGERS = ("shared", "function_app", "devstack.harness", "root")

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # A JWT: three base64url segments, the first a JSON header (`{"` encodes as eyJ).
    ("jwt", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    ("webhook_secret", re.compile(r"whsec_[A-Za-z0-9+/]{16,}={0,2}")),
    # A private key (the app's certificate credential) in PEM form.
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    # Teams links: a join URL with its query (the virtual-appointment link), or a meetup-join path.
    ("join_url", re.compile(r"https?://(?:[a-z0-9-]+\.)*teams\.microsoft\.com/[^\s\"'<>…]*\?[^\s\"'<>…]+",
                            re.IGNORECASE)),
    ("join_web_url", re.compile(r"https?://(?:[a-z0-9-]+\.)*teams\.microsoft\.com/l/meetup-join/[^\s\"'<>…]+",
                                re.IGNORECASE)),
    # key=value forms of credentials, with a value that is not obviously a placeholder.
    ("credential_field", re.compile(
        r"\b(?:password|client_secret|refresh_token|access_token|id_token|assertion)[\"']?\s*[=:]\s*[\"']?"
        r"(?!<|\*|\.\.\.|…|None\b|null\b|redacted|REDACTED|\{)[A-Za-z0-9!#$%&()*+,./:;=?@\[\]^_`{|}~-]{6,}")),
)


@dataclass(frozen=True)
class Finding:
    """One leak: what kind, where, and an excerpt with the secret part masked."""

    kind: str
    where: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.kind} in {self.where}: {self.excerpt}"


@lru_cache(maxsize=1)
def known_secrets() -> tuple[tuple[str, str], ...]:
    """Literal secrets of the local stack: client secrets, passwords, the webhook secret, the function key."""
    found: list[tuple[str, str]] = []
    directory = json.loads((ROOT / "devstack" / "seed" / "directory.json").read_text())
    for client in directory.get("clients", []):
        if client.get("client_secret"):
            found.append(("client_secret", client["client_secret"]))
    for tenant in (directory, *directory.get("customer_tenants", [])):
        for user in tenant.get("users", []):
            if user.get("password"):
                found.append(("password", user["password"]))
    if directory.get("identity_header"):
        found.append(("identity_header", directory["identity_header"]))
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in ("WEBHOOK_SECRET", "ENTRA_CLIENT_SECRET"):
        for part in (values.get(name) or "").split(","):
            if part.strip():
                found.append((name.lower(), part.strip()))
    found.append(("function_key", "local-dev-function-key"))
    return tuple(dict.fromkeys(found))


def _mask(text: str, start: int, end: int) -> str:
    secret = text[start:end]
    shown = secret[:6] + "…" if len(secret) > 8 else "…"
    return (text[max(0, start - 40):start] + shown + text[end:end + 20]).replace("\n", " ")


def scan_text(text: str, where: str) -> list[Finding]:
    """Every finding in one piece of text."""
    findings = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            findings.append(Finding(kind, where, _mask(text, match.start(), match.end())))
    for kind, secret in known_secrets():
        index = text.find(secret)
        if index >= 0:
            findings.append(Finding(kind, where, _mask(text, index, index + len(secret))))
    return findings


_STANDARD_ATTRS = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}


def record_texts(record: logging.LogRecord) -> Iterable[tuple[str, str]]:
    """The texts of a record worth scanning: the message, each `extra` field, the traceback."""
    try:
        yield "message", record.getMessage()
    except Exception:  # a record whose arguments do not format is still scanned raw
        yield "message", f"{record.msg} {record.args}"
    for name, value in vars(record).items():
        if name not in _STANDARD_ATTRS and not name.startswith("_"):
            yield f"extra[{name}]", value if isinstance(value, str) else repr(value)
    if record.exc_info and record.exc_info[1] is not None:
        yield "exception", logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        yield "stack", record.stack_info


def is_app_record(record: logging.LogRecord) -> bool:
    """Whether the record comes from one of APP_LOGGERS (or a child of one)."""
    return any(record.name == name or record.name.startswith(name + ".") for name in APP_LOGGERS)


def scan_records(records: Iterable[logging.LogRecord]) -> list[Finding]:
    """Findings in the app's records."""
    findings = []
    for record in records:
        if not is_app_record(record):
            continue
        for part, text in record_texts(record):
            findings.extend(scan_text(text, f"{record.name} ({part}) line {record.lineno}"))
    return findings


class CollectingHandler(logging.Handler):
    """Keeps every record it is handed (the fixture attaches it to the root logger)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def scan_text_file(path: Path) -> list[Finding]:
    """Findings in a log file written by an app process (a harness run as a child process).

    Only lines from the app's loggers are judged (the `%(name)s:` of the harness's log format), and the
    lines of tracebacks that follow them.
    """
    findings: list[Finding] = []
    current_is_app = False
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        match = _LOG_LINE.match(line)
        if match:
            name = match.group("name")
            current_is_app = any(name == n or name.startswith(n + ".") for n in APP_LOGGERS)
        if current_is_app:
            findings.extend(scan_text(line, f"{path.name}:{number}"))
    return findings


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ (?P<name>[\w.]+): ")

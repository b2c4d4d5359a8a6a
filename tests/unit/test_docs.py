"""The docs cannot drift: links and anchors resolve, repository paths exist, the generated Reference is what the
code makes now, and the README says nothing the reference contradicts (settings, routes, queue names).

Each check is a function of a repository root, so the tests below can break a copy on purpose and see it fail.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import gen_reference  # noqa: E402

pytestmark = pytest.mark.unit
README_LIMIT = 10 * 1024
# Top-level folders whose paths the docs name; a backticked path under one of them must exist.
REPO_DIRS = (
    "shared",
    "tests",
    "infra",
    "docs",
    "examples",
    "tools",
    "devstack",
    "contracts",
    "chaos",
    "bench",
    ".github",
)
LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def doc_files(root: Path) -> list[Path]:
    """Every hand-written Markdown file: the README, CONTRIBUTING, CHANGELOG and the site's pages."""
    files = [root / name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md") if (root / name).exists()]
    return files + sorted((root / "docs").rglob("*.md"))


def prose(text: str) -> str:
    """The text outside fenced code blocks (links and anchors there are examples, not links)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc (and GitHub, for these headings) makes it."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings."""
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*$", prose(path.read_text()), re.MULTILINE)}


def broken_links(root: Path) -> list[str]:
    """Relative links whose file does not exist, or whose #anchor is not a heading of that file."""
    broken = []
    for path in doc_files(root):
        for match in LINK.finditer(prose(path.read_text())):
            target = match.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto: ...: outside the repository
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(root)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no such anchor)")
    return broken


def missing_paths(root: Path) -> list[str]:
    """Backticked repository paths (`shared/...`, `tests/...`, ...) that do not exist."""
    pattern = re.compile(r"`((?:" + "|".join(re.escape(d) for d in REPO_DIRS) + r")/[\w./-]*)`")
    missing = []
    for path in doc_files(root):
        if "reference" in path.relative_to(root).parts:
            continue  # generated: checked against its generator instead
        for match in pattern.finditer(path.read_text()):
            name = match.group(1).rstrip("/.")
            if not (root / name).exists():
                missing.append(f"{path.relative_to(root)}: {name}")
    return missing


def readme_contradictions(root: Path, routes: set[str], settings: set[str], queue_names: set[str]) -> list[str]:
    """What the README names that the reference does not have: settings, routes and queue names."""
    text = (root / "README.md").read_text()
    wrong = [
        f"setting {name}" for name in sorted(set(re.findall(r"`([A-Z][A-Z0-9_]{3,})(?:=[^`]*)?`", text)) - settings)
    ]
    return wrong + route_and_queue_contradictions(text, routes, queue_names)


def route_and_queue_contradictions(text: str, routes: set[str], queue_names: set[str]) -> list[str]:
    """Routes (`GET /api/...`, `https://<app>/api/...`) and queue names a text gives that the app does not have."""
    wrong = []
    for method, route in re.findall(r"\b(GET|POST) `?(/api/[\w/{}.-]*[\w}])(?![\w/{}-])", text):
        if f"{method} {route}" not in routes:
            wrong.append(f"route {method} {route}")
    for route in re.findall(r"https://<app>(/api/[\w/{}.-]*[\w}])(?![\w/{}-])", text):
        if not any(r.split(" ", 1)[1] == route for r in routes):
            wrong.append(f"route {route}")
    named = set(re.findall(r"\[\(([\w-]+)\)\]", text))  # storage nodes of a diagram
    named |= {q for pair in re.findall(r"[Qq]ueues? `([a-z][a-z-]*)`|`([a-z][a-z-]*)` queue", text) for q in pair if q}
    suffixes = ("-poison", "-rejected", "-outbox", "-urls")
    named |= {q for q in re.findall(r"`([a-z]+(?:-[a-z]+)+)`", text) if q.endswith(suffixes)}
    return wrong + [f"queue {q}" for q in sorted(named - queue_names)]


def _route_forms(route: str) -> list[str]:
    optional = re.fullmatch(r"(.*)/\{(\w+)\?\}", route)
    return [f"{optional.group(1)}/{{{optional.group(2)}}}", optional.group(1)] if optional else [route]


def reference_facts() -> tuple[set[str], set[str], set[str]]:
    """Routes (`METHOD /api/...`), setting and azd value names, and queue names, from the code."""
    from shared.queues import ALL_QUEUES
    from shared.settings_registry import SETTINGS

    prefix = gen_reference._route_prefix()
    routes = set()
    for function in gen_reference.function_metadata():
        for binding in function["bindings"]:
            if binding.get("type") == "httpTrigger":
                for method in binding.get("methods") or ["GET", "POST"]:
                    route = binding.get("route") or function["name"]
                    # An optional last segment (`{id?}`) answers with it and without it, as the host routes it.
                    for form in _route_forms(route):
                        routes.add(f"{method.upper()} /{prefix}/{form}")
    names = {spec.name for spec in SETTINGS} | {env for env, _ in gen_reference.azd_values().values()}
    return routes, names, set(ALL_QUEUES)


@pytest.fixture(scope="module")
def facts() -> tuple[set[str], set[str], set[str]]:
    return reference_facts()


# --- The repository as it is ---------------------------------------------------------------------------------


def test_readme_is_at_most_10_kb():
    assert (ROOT / "README.md").stat().st_size <= README_LIMIT


def test_no_broken_links_or_anchors():
    assert broken_links(ROOT) == []


def test_every_repository_path_named_exists():
    assert missing_paths(ROOT) == []


@pytest.mark.functional
def test_generated_reference_pages_are_current():
    stale = gen_reference.differing()
    assert not stale, f"regenerate with `python tools/gen_reference.py`: {stale} differ"


@pytest.mark.functional
def test_the_readme_agrees_with_the_reference(facts):
    assert readme_contradictions(ROOT, *facts) == []


@pytest.mark.functional
def test_every_page_agrees_with_the_reference_on_routes_and_queues(facts):
    routes, _, queue_names = facts
    wrong = {
        str(path.relative_to(ROOT)): found
        for path in doc_files(ROOT)
        if "reference" not in path.parts
        and (found := route_and_queue_contradictions(path.read_text(), routes, queue_names))
    }
    assert wrong == {}


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")]
    assert [p for p in pages if f": {p}" not in nav] == []


def test_make_targets_named_in_the_docs_exist():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = {t for path in doc_files(ROOT) for t in re.findall(r"`make ([a-z-]+)", path.read_text())}
    assert named and named <= targets, f"docs name make targets that do not exist: {named - targets}"


def test_every_published_reason_has_a_what_to_do():
    errors = (ROOT / "docs" / "integrate" / "errors.md").read_text()
    published = json.loads((ROOT / "contracts" / "schemas" / "common.json").read_text())["$defs"]["reason"]["enum"]
    assert [r for r in published if f"`{r}`" not in errors] == []


def test_the_by_hand_verifier_agrees_with_standard_webhooks():
    # The C# and Java samples on the verifying page follow examples/python/verify_webhook.py line for line.
    from standardwebhooks.webhooks import Webhook

    sys.path.insert(0, str(ROOT / "examples" / "python"))
    from verify_webhook import verify

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type": "appointment.joinurl.ready", "data": {}}'
    signed_at = 1_790_000_000
    signature = Webhook(secret).sign("evt-1_ready", _datetime(signed_at), body.decode())
    headers = {
        "webhook-id": "evt-1_ready",
        "webhook-timestamp": str(signed_at),
        "webhook-signature": "v1,b3RoZXI= " + signature,
    }
    assert verify(secret, headers, body, now=signed_at + 10)
    assert not verify(secret, headers, body + b" ", now=signed_at + 10)
    assert not verify(secret, headers, body, now=signed_at + 301)


def _datetime(seconds: int):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, tz=UTC)


# --- The same checks fail when something is broken on purpose ------------------------------------------------


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md", "mkdocs.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    for folder in REPO_DIRS:
        if folder != "docs" and (ROOT / folder).exists():
            (tmp_path / folder).symlink_to(ROOT / folder)
    return tmp_path


def test_a_broken_link_and_a_broken_anchor_are_found(copy: Path):
    assert broken_links(copy) == []
    page = copy / "docs" / "integrate" / "fit.md"
    page.write_text(page.read_text() + "\n[gone](no-such-page.md) and [lost](../deploy.md#no-such-heading)\n")
    assert broken_links(copy) == [
        "docs/integrate/fit.md: no-such-page.md (no such file)",
        "docs/integrate/fit.md: ../deploy.md#no-such-heading (no such anchor)",
    ]


def test_a_path_that_does_not_exist_is_found(copy: Path):
    page = copy / "docs" / "maintain" / "tests.md"
    page.write_text(page.read_text() + "\nSee `tests/unit/test_nothing_here.py`.\n")
    assert missing_paths(copy) == ["docs/maintain/tests.md: tests/unit/test_nothing_here.py"]


@pytest.mark.functional
def test_a_hand_edited_generated_page_is_found(tmp_path: Path):
    shutil.copytree(ROOT / "docs" / "reference", tmp_path / "reference")
    page = tmp_path / "reference" / "settings.md"
    page.write_text(
        page.read_text().replace("| `GRAPH_TIMEOUT_SECONDS` | `10` |", "| `GRAPH_TIMEOUT_SECONDS` | `30` |")
    )
    (tmp_path / "reference" / "storage.md").unlink()
    assert gen_reference.differing(tmp_path / "reference") == ["settings.md", "storage.md"]


@pytest.mark.functional
def test_a_readme_claim_the_reference_contradicts_is_found(copy: Path, facts):
    readme = copy / "README.md"
    readme.write_text(
        readme.read_text() + "\nSet `GRAPH_TIMEOUT` and call `GET /api/join-urls`; results wait on the "
        "`join-url` queue.\n"
    )
    assert readme_contradictions(copy, *facts) == [
        "setting GRAPH_TIMEOUT",
        "route GET /api/join-urls",
        "queue join-url",
    ]


def test_what_sets_each_setting_is_read_from_the_bicep():
    sources = gen_reference.setting_sources()
    assert sources["WEBHOOK_SECRET"] == "azd env `WEBHOOK_SECRET` (Key Vault reference)"
    assert sources["ENTRA_CLIENT_SECRET"] == "azd env `ENTRA_CLIENT_SECRET` (Key Vault reference)"
    assert sources["ENTRA_TENANCY"] == "azd env `ENTRA_TENANCY` (default `single`)"
    assert sources["MEETING_MANAGEMENT"] == "Bicep parameter `meetingManagement`"  # not mapped for azd
    assert sources["CREDENTIAL_MODE"] == "Bicep `vault`"
    assert "GRAPH_BASE_URL" not in sources  # the code's default applies

"""The published message contracts: JSON Schema 2020-12 files in contracts/schemas, shipped with the app.

They are the single source of truth: the OpenAPI document embeds them (read on first use, not at indexing),
the AsyncAPI document (contracts/asyncapi.yaml) refers to them, and the tests validate the code's models and
every message of the end-to-end tests against them.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "contracts" / "schemas"
ASYNCAPI_DOCUMENT = SCHEMA_DIR.parent / "asyncapi.yaml"
_REF = re.compile(r"^(?P<file>[a-z0-9-]+\.json)?(?:#(?P<pointer>/.*))?$")


def schema_names() -> list[str]:
    """Every schema file name, sorted (`common.json`, `join-url-result.json`, ...)."""
    return sorted(path.name for path in SCHEMA_DIR.glob("*.json"))


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One schema file as a dict (cached; callers must not mutate it)."""
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return loaded


def component_name(file_name: str) -> str:
    """`join-url-result.json` → `JoinUrlResult`: the schema's name under the OpenAPI components."""
    return "".join(part.capitalize() for part in file_name.removesuffix(".json").split("-"))


def openapi_components() -> dict[str, Any]:
    """Every schema as an OpenAPI 3.1 component, with its file references rewritten to components."""
    return {component_name(name): _embedded(load_schema(name), name) for name in schema_names()}


def _embedded(node: Any, file_name: str) -> Any:
    # `$id` goes: inside an OpenAPI document, a `$ref` is resolved against the document, not the file it came
    # from; `$schema` goes too, as 2020-12 is OpenAPI 3.1's own dialect.
    if isinstance(node, list):
        return [_embedded(item, file_name) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$id", "$schema"):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = _component_ref(value, file_name)
        else:
            out[key] = _embedded(value, file_name)
    return out


def _component_ref(ref: str, file_name: str) -> str:
    match = _REF.match(ref)
    if match is None:
        raise ValueError(f"{file_name}: unsupported $ref {ref!r}")
    target = component_name(match.group("file") or file_name)
    return f"#/components/schemas/{target}{match.group('pointer') or ''}"

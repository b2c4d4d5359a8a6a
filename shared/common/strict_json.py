"""JSON as the app accepts it from outside: strict, bounded, and unambiguous about the fields that identify.

Python's json module accepts NaN and Infinity, keeps the last of two equal keys, and raises RecursionError
(not ValueError) on deeply nested input; each of those would make a permanently bad message look transient
(retried to poison) or silently change which event it is. Here each is a ValueError with a clear reason.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

BOM = "\ufeff"


class StrictJsonError(ValueError):
    """The text is not JSON the app accepts; str() says why (safe to log: no input is echoed)."""


def loads(text: str, *, unique: Collection[str] = ()) -> Any:
    """Parse JSON text: a leading byte-order mark is tolerated; NaN/Infinity, nesting beyond the parser's
    depth and a repeated key named in `unique` (in any object) are refused with StrictJsonError."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result and key in unique:
                repeated.append(key)
            result[key] = value
        return result

    def constant(name: str) -> Any:
        raise StrictJsonError(f"{name} is not a JSON number")

    try:
        doc = json.loads(text.removeprefix(BOM), object_pairs_hook=pairs if unique else None,
                         parse_constant=constant)
    except RecursionError:
        raise StrictJsonError("JSON nested too deeply") from None
    except StrictJsonError:
        raise
    except ValueError as exc:
        raise StrictJsonError(f"not JSON: {exc}") from None
    if repeated:
        raise StrictJsonError(f"key {repeated[0]!r} appears twice in one object; which one is meant is ambiguous")
    return doc


def decode_utf8(body: bytes) -> str:
    """Bytes as UTF-8 text (a byte-order mark dropped); UnicodeDecodeError when they are not UTF-8."""
    return body.decode("utf-8").removeprefix(BOM)

"""Strict JSON: what would make a permanently bad message look transient, or ambiguous, is a ValueError."""

from __future__ import annotations

import pytest

from shared.common.strict_json import StrictJsonError, decode_utf8, loads

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "why"), [
    ("[" * 20_000 + "]" * 20_000, "nested too deeply"),     # RecursionError is not a ValueError
    ('{"a": NaN}', "NaN"), ('{"a": Infinity}', "Infinity"), ('{"a": -Infinity}', "-Infinity"),
    ('{"id": 1, "id": 2}', "'id' appears twice"),
    ("{not json", "not JSON"),
])
def test_refused(text: str, why: str) -> None:
    with pytest.raises(StrictJsonError, match=why):
        loads(text, unique={"id"})


def test_repeats_of_other_keys_and_nested_ids_are_judged_by_the_caller():
    assert loads('{"x": 1, "x": 2}', unique={"id"}) == {"x": 2}
    with pytest.raises(StrictJsonError):
        loads('{"data": {"id": 1, "id": 1}}', unique={"id"})


def test_a_byte_order_mark_is_tolerated():
    assert loads('\ufeff{"id": "e"}') == {"id": "e"}
    assert decode_utf8(b"\xef\xbb\xbf{}") == "{}"
    with pytest.raises(UnicodeDecodeError):
        decode_utf8(b"\xff\xfe")

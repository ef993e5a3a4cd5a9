"""The type policy and the JSON reader, unit by unit (the hostile tests cover them end to end).

Policy: every emitted record validates against its stream's SCHEMA; a value of the wrong
type is converted when that loses nothing, otherwise emitted as null with a warning.
"""

from __future__ import annotations

import math
import typing as t

import jsonschema
import msgspec
import pytest

from tap_lms_unified.shaping import Shaper, decode_json

PROPERTIES: dict[str, t.Any] = {
    "id": {"type": ["string"]},
    "name": {"type": ["string", "null"]},
    "count": {"type": ["integer", "null"]},
    "score": {"type": ["number", "null"]},
    "active": {"type": ["boolean", "null"]},
    "remote_data": {"type": ["object", "null"], "additionalProperties": True},
    "tags": {"type": ["array", "null"], "items": {"type": ["string"]}},
    "owner": {
        "type": ["object", "null"],
        "properties": {"id": {"type": ["string", "null"]}, "age": {"type": ["integer", "null"]}},
    },
    "fields": {
        "type": ["array", "null"],
        "items": {"type": ["object"], "properties": {"key": {"type": ["string", "null"]}}},
    },
    "value": {"type": ["array", "boolean", "null", "number", "object", "string"]},
}


def shape(record: dict) -> tuple[dict, list[str]]:
    warnings: list[str] = []
    shaper = Shaper(
        "things", PROPERTIES, (), unchecked=("id",), warn=lambda m, *a: warnings.append(m % a)
    )
    row = shaper(record)
    return row, warnings


def assert_valid(row: dict) -> None:
    jsonschema.Draft7Validator({"type": "object", "properties": PROPERTIES}).validate(row)


@pytest.mark.parametrize(
    ("field", "sent", "emitted"),
    [
        ("name", 7, "7"),  # an integer for a string: lossless
        ("name", 2.5, "2.5"),
        ("count", 3.0, 3),  # an integral float for an integer
        ("score", 87, 87),  # an integer is a number
        ("owner", {"id": 5}, {"id": "5"}),  # nested, converted
    ],
)
def test_lossless_conversions(field, sent, emitted):
    row, _ = shape({"id": "x", field: sent})
    assert row[field] == emitted
    assert_valid(row)


@pytest.mark.parametrize(
    ("field", "sent", "nulled"),
    [
        ("remote_data", "oops", "remote_data"),
        ("tags", {"a": 1}, "tags"),
        ("tags", ["a", None], "tags"),  # an item that may not be null nulls its array
        ("count", 2.5, "count"),
        ("count", "12", "count"),
        ("active", 1, "active"),
        ("score", math.inf, "score"),  # 1e400 in the JSON
        ("fields", [{"key": "k"}, 5], "fields"),
        ("owner", {"id": "o", "age": "old"}, "owner.age"),  # only the nested value
    ],
)
def test_values_that_cannot_be_converted_become_null_with_a_warning(field, sent, nulled):
    row, warnings = shape({"id": "x", field: sent})
    if "." in nulled:
        outer, inner = nulled.split(".")
        assert row[outer][inner] is None
    else:
        assert row[field] is None
    assert_valid(row)
    assert any(f"{nulled} emitted as null" in w for w in warnings), warnings


def test_values_that_fit_are_untouched_and_silent():
    record = {
        "id": "x",
        "name": "n",
        "count": 1,
        "score": 1.5,
        "active": True,
        "remote_data": {"deep": [1, {"x": None}]},
        "tags": ["a"],
        "owner": {"id": "o", "age": 3, "extra": 1},
        "fields": [{"key": "k", "other": [1]}],
        "value": [1, "b"],
    }
    row, warnings = shape(dict(record))
    assert row == record
    assert warnings == []


def test_the_primary_key_is_left_to_the_key_policy():
    row, warnings = shape({"id": 7})
    assert row["id"] == 7  # never emitted: get_records counts it as invalid
    assert warnings == []


def test_warnings_per_field_are_capped():
    warnings: list[str] = []
    shaper = Shaper("things", PROPERTIES, (), warn=lambda m, *a: warnings.append(m % a))
    for _ in range(100):
        shaper({"id": "x", "remote_data": "oops"})
    assert len(warnings) == Shaper.WARNINGS_PER_FIELD + 1
    assert "not logged" in warnings[-1]


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'["\\ud83d"]', ["\ufffd"]),  # a lone surrogate escape
        (b'{"\\udc00": "a\\ud83d\\ude00"}', {"\ufffd": "a\U0001f600"}),  # pairs stay
        (b"[1e400, -1e400]", [math.inf, -math.inf]),  # beyond a double: the shaper nulls it
        (b'{"a": 1}', {"a": 1}),
    ],
)
def test_valid_json_msgspec_refuses_is_read(body, value):
    assert decode_json(body) == value


@pytest.mark.parametrize("body", [b"[NaN]", b"[Infinity]", b"{", b"<html>", b'["\xed\xa0\xbd"]'])
def test_what_is_not_json_stays_an_error(body):
    with pytest.raises(msgspec.DecodeError):
        decode_json(body)

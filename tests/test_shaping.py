"""The type policy and the JSON reader, unit by unit (the hostile tests cover them end to end).

Policy: every emitted record validates against its stream's SCHEMA; a value of the wrong
type is converted when that loses nothing, otherwise emitted as null with a warning.
"""

from __future__ import annotations

import copy
import math
import typing as t

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_lms_unified.shaping import Shaper, decode_json, utc_iso
from tap_lms_unified.streams import LmsStream
from tap_lms_unified.tap import TapLmsUnified

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


# -- the fast path: the same rows and warnings as the full shaping, whatever the record --

#: Values of every JSON type, timestamps of the APIs' forms and near misses among them.
TIMESTAMPS = st.sampled_from(
    [
        "2024-01-01T10:00:00.123Z",
        "2024-01-01T10:00:00.123456Z",
        "2024-02-30T10:00:00.123Z",  # no such day
        "2024-W01-1T10:00:00.123Z",  # a week date: ISO 8601, not RFC 3339
        "2024-01-01T10:00:00,123Z",
        "2024-01-01 10:00:00.123Z",
        "2024-01-01T10:00:00+02:00",
        "2024-01-01T10:00:00",
        "٢٠٢٤-01-01T10:00:00.123Z",  # Arabic-Indic digits
    ]
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | TIMESTAMPS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def shapers_of_every_stream() -> list[tuple[str, Shaper, Shaper]]:
    """(stream, shaper, its twin) of every stream of both providers, built as the tap does."""
    configs = {
        "kombo": {"integration_id": "t"},
        "bindbee": {"connector_token": "t" * 12, "connector_name": "t"},
    }
    out = []
    for provider, extra in configs.items():
        tap = TapLmsUnified(
            config={"provider": provider, "api_key": "k", **extra}, validate_config=False
        )
        for name, stream in tap.streams.items():
            assert isinstance(stream, LmsStream)
            twin = type(stream)(tap=tap, run=stream.run).shape  # its own warning counters
            out.append((f"{provider}.{name}", stream.shape, twin))
    return out


SHAPERS = shapers_of_every_stream()


@pytest.mark.parametrize(("stream", "fast", "full"), SHAPERS, ids=[s[0] for s in SHAPERS])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_shapes_every_record_as_the_full_shaping(stream, fast, full, data):
    """Any record: the generated fast path returns what the general shaping returns."""
    names = [*fast.fields, *fast.fields, "unknown_field"]  # schema fields, twice as often
    typed = st.dictionaries(st.sampled_from(names), JSON, max_size=len(fast.fields) + 2)
    # Records of the right types, too: mostly what the fast path answers by itself.
    fitting = st.fixed_dictionaries(
        {}, optional={name: TIMESTAMPS | st.text(max_size=5) | st.none() for name in names}
    )
    record = data.draw(typed | fitting)
    said_fast: list[str] = []
    said_full: list[str] = []
    fast._warn = lambda message, *args: said_fast.append(message % args)
    full._warn = lambda message, *args: said_full.append(message % args)
    shaped = fast.shape(copy.deepcopy(record))
    assert shaped == full.shape_in_full(copy.deepcopy(record)), stream
    assert said_fast == said_full


def test_the_fast_path_answers_records_that_fit_by_itself():
    """A fitting record never reaches the general shaping (else the fast path is dead code)."""
    passed_on: list[dict] = []

    class Counting(Shaper):
        def shape_in_full(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
            passed_on.append(record)
            return super().shape_in_full(record)

    properties = {**PROPERTIES, "at": {"type": ["string", "null"], "format": "date-time"}}
    shaper = Counting("things", properties, (), unchecked=("id",), warn=lambda *_: None)
    record = {"id": "x", "name": "n", "count": 1, "score": 1.5, "at": "2024-01-01T10:00:00.123Z"}
    assert shaper.shape(dict(record))["at"] == "2024-01-01T10:00:00.123000Z"
    assert shaper.shape({**record, "tags": ["a"], "owner": {"id": "o"}})["tags"] == ["a"]
    assert passed_on == []
    shaper.shape({**record, "count": 1.0})  # converted, with a warning: the full path's work
    shaper.shape({**record, "at": "yesterday"})  # no timestamp: null, with a warning
    assert len(passed_on) == 2


@pytest.mark.parametrize(
    "value",
    ["2024-W01-1T10:00:00.123Z", "2024-W01-1T10:00:00.123456Z", "2024-001T10:00:00.123Z"],
)
def test_iso_week_and_ordinal_dates_are_converted_not_passed_through(value):
    """Python reads ISO 8601 week dates; RFC 3339 has none: emitted in our format or null."""
    result = utc_iso(value)
    assert result is None or result.startswith("2024-01-0")
    assert result is None or len(result) == 27


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0024-01-01T10:00:00+00:00", "0024-01-01T10:00:00.000000Z"),  # the general path
        ("0024-01-01T10:00:00.123Z", "0024-01-01T10:00:00.123000Z"),  # the fast path
        ("0999-12-31T23:00:00-02:00", "1000-01-01T01:00:00.000000Z"),
    ],
)
def test_timestamps_keep_four_digit_years(value, expected):
    """One fixed format, early years included: bookmarks are compared as strings."""
    assert utc_iso(value) == expected

"""Property-based tests: odd but valid API records, served by the sandbox, through the tap.

Records are generated with hypothesis from the stream schemas in
`tap_lms_unified/schemas/` (generated from, and contract-tested against, the providers'
OpenAPI models): nulls wherever a field is nullable, optional keys missing, unknown extra
keys, non-ASCII and very long strings, huge and negative numbers, and timestamps in odd but
valid forms (offsets like +05:30, no fraction, nanoseconds, date only, lowercase z, a space
instead of T). A `status` fault with HTTP 200 and the provider's envelope serves them as
the only page of each endpoint, so the real pipeline runs: HTTP, paging, normalisation,
the shared walks and the SDK's type conformance. Every emitted record must validate
against its stream's SCHEMA message (Draft 7, date-time checked), every timestamp must come
out as UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ` denoting the same instant, and plain values must
come out unchanged.
"""

from __future__ import annotations

import json
import re
import typing as t
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_lms_unified.sandbox import Fault, Sandbox
from tests.conftest import (
    BINDBEE_STREAMS,
    ROOT,
    bindbee_config,
    kombo_config,
    primary_key,
    relations_of,
    run_tap,
)
from tests.reliability_utils import run_tap_exact

SCHEMAS = ROOT / "tap_lms_unified" / "schemas"
EXAMPLES = 50
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
#: Fields the tap adds to rows; never in an API record.
TAP_FIELDS = frozenset({"_sdc_deleted_at", "integration_id", "connector_name"})
PROGRESS_TAP_FIELDS = TAP_FIELDS | {"user_id", "user_changed_at"}
#: Kombo endpoint -> (stream with the endpoint's own rows, nested stream, nesting key)
KOMBO_ENDPOINTS = {
    "/lms/users": ("users", "progress", "progress"),
    "/lms/course-progressions": ("course_progressions", None, None),
    "/lms/courses": ("courses", "course_revisions", "revisions"),
    "/lms/skills": ("skills", None, None),
}


def schema(provider: str, stream: str) -> dict:
    return json.loads((SCHEMAS / provider / f"{stream}.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------ timestamps

#: input string -> the instant it denotes, and its form (filled as strings are generated)
INSTANTS: dict[str, datetime] = {}
FORM_OF: dict[str, str] = {}
#: what the property tests checked, for the summary line
STATS: Counter[str] = Counter()
OFFSETS = [
    timedelta(0),
    timedelta(hours=5, minutes=30),
    timedelta(hours=5, minutes=45),
    timedelta(hours=-8),
    timedelta(hours=14),
    timedelta(hours=-12),
    timedelta(hours=-3, minutes=-30),
]
FORMS = (
    "ms-Z",  # 2024-03-01T10:00:00.123Z, Kombo's usual form
    "no-fraction-Z",  # 2024-03-01T10:00:00Z
    "micro-offset",  # 2024-03-01T15:30:00.123456+05:30
    "no-fraction-offset",  # 2024-03-01T02:00:00-08:00
    "nanoseconds",  # 2024-03-01T10:00:00.123456789Z
    "lowercase-z",  # 2024-03-01T10:00:00.5z
    "lowercase-t",  # 2024-03-01t10:00:00Z
    "space",  # 2024-03-01 10:00:00+00:00
    "date-only",  # 2024-03-01 (midnight UTC)
    "naive",  # 2024-03-01T10:00:00 (no zone: UTC)
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """An odd but valid timestamp; its instant is remembered in INSTANTS."""
    moment = draw(
        st.datetimes(
            min_value=datetime(1970, 1, 2),
            max_value=datetime(2099, 12, 30),
        )
    ).replace(tzinfo=UTC)
    form = draw(st.sampled_from(FORMS))
    offset = draw(st.sampled_from(OFFSETS)) if "offset" in form else timedelta(0)
    local = moment.astimezone(timezone(offset))
    base = local.strftime("%Y-%m-%dT%H:%M:%S")
    zone = local.strftime("%z")
    zone = f"{zone[:3]}:{zone[3:]}"
    if form == "ms-Z":
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        text = f"{base}.{moment.microsecond // 1000:03d}Z"
    elif form == "no-fraction-Z":
        moment = moment.replace(microsecond=0)
        text = f"{base}Z"
    elif form == "micro-offset":
        text = f"{base}.{local.microsecond:06d}{zone}"
    elif form == "no-fraction-offset":
        moment = moment.replace(microsecond=0)
        text = base + zone
    elif form == "nanoseconds":
        text = f"{base}.{moment.microsecond:06d}{draw(st.integers(0, 999)):03d}Z"
    elif form == "lowercase-z":
        moment = moment.replace(microsecond=moment.microsecond // 100000 * 100000)
        text = f"{base}.{moment.microsecond // 100000}z"
    elif form == "lowercase-t":
        moment = moment.replace(microsecond=0)
        text = base.replace("T", "t") + "Z"
    elif form == "space":
        moment = moment.replace(microsecond=0)
        text = base.replace("T", " ") + "+00:00"
    elif form == "date-only":
        day: date = moment.date()
        moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        text = day.isoformat()
    else:
        moment = moment.replace(microsecond=0)
        text = base
    INSTANTS[text] = moment
    FORM_OF[text] = form
    return text


# ------------------------------------------------------------------ values from a schema

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "Zoë Ñúñez-Łukasiewicz",
        "山田 太郎",
        "עברית مرحبا",
        "🚀🎓 emoji",
        "line\nbreak\ttab",
        'quote " backslash \\',
        "NUL \x00 inside",
        "\u200b zero width",
    ]
)
STRINGS = st.one_of(
    st.text(max_size=30),
    ODD_STRINGS,
    # very long: 2 000 - 20 000 characters, non-ASCII included
    st.tuples(st.text(min_size=1, max_size=5), st.integers(400, 4000)).map(
        lambda pair: (pair[0] * pair[1])[:20000]
    ),
)
INTEGERS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 2**63, 2**64 + 1, -(2**70), 10**30]),
)
NUMBERS = st.one_of(
    INTEGERS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0]),
)


#: keys no model has, also inside nested objects
EXTRA_KEYS = st.dictionaries(st.from_regex(r"\Ax_[a-z]{1,8}\Z"), JSON_VALUES, max_size=2)


def types_of(node: dict) -> set[str]:
    raw = node.get("type", [])
    return {raw} if isinstance(raw, str) else set(raw)


def value(node: dict, *, relation: bool = False) -> st.SearchStrategy[t.Any]:
    """Any value the API may send for a schema node."""
    types = types_of(node)
    nullable = "null" in types
    types.discard("null")
    if len(types) > 1:  # any JSON value (Kombo's integration_fields[].value)
        return JSON_VALUES
    (kind,) = types or {"null"}
    strategy: st.SearchStrategy[t.Any]
    if kind == "string" and node.get("format") == "date-time":
        strategy = timestamps()
    elif kind == "string" and relation:  # Bindbee: an id, or the expanded object
        strategy = st.one_of(
            st.uuids().map(str),
            st.builds(lambda i, n: {"id": i, "name": n}, st.uuids().map(str), STRINGS),
        )
    elif kind == "string":
        strategy = STRINGS
    elif kind == "integer":
        strategy = INTEGERS
    elif kind == "number":
        strategy = NUMBERS
    elif kind == "boolean":
        strategy = st.booleans()
    elif kind == "object":
        strategy = obj(node)
    elif kind == "array":
        strategy = st.lists(value(node.get("items", {}), relation=relation), max_size=3)
    else:
        strategy = st.none()
    return st.one_of(st.none(), strategy) if nullable else strategy


def obj(node: dict, skip: t.Collection[str] = (), relations: t.Collection[str] = ()) -> t.Any:
    props = {k: v for k, v in node.get("properties", {}).items() if k not in skip}
    if not props:  # free-form (custom_fields, remote_data, raw_data)
        return st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4)
    known = st.fixed_dictionaries(
        {}, optional={k: value(v, relation=k in relations) for k, v in props.items()}
    )
    return st.tuples(known, EXTRA_KEYS).map(lambda pair: {**pair[1], **pair[0]})


@st.composite
def api_record(
    draw: st.DrawFn,
    provider: str,
    stream: str,
    *,
    skip: t.Collection[str] = TAP_FIELDS,
    nested: dict[str, st.SearchStrategy] | None = None,
) -> dict:
    """A record as the API would send it: key present, other keys maybe missing, extras."""
    key = primary_key(provider, stream)
    node = schema(provider, stream)
    record = draw(obj(node, skip={*skip, key}, relations=relations_of(provider, stream)))
    record[key] = draw(st.uuids().map(str))
    for name, strategy in (nested or {}).items():
        if draw(st.booleans()):
            record[name] = draw(strategy)
    return record


def records(provider: str, stream: str, **kwargs: t.Any) -> st.SearchStrategy:
    """Up to three API records of a stream, with distinct keys."""
    key = primary_key(provider, stream)
    return st.lists(api_record(provider, stream, **kwargs), max_size=3, unique_by=lambda r: r[key])


KOMBO_PAGES = st.fixed_dictionaries(
    {
        "/lms/users": records(
            "kombo",
            "users",
            nested={"progress": records("kombo", "progress", skip=PROGRESS_TAP_FIELDS)},
        ),
        "/lms/course-progressions": records("kombo", "course_progressions"),
        "/lms/courses": records(
            "kombo", "courses", nested={"revisions": records("kombo", "course_revisions")}
        ),
        "/lms/skills": records("kombo", "skills"),
    }
)
BINDBEE_PAGES = st.fixed_dictionaries(
    {stream: records("bindbee", stream) for stream in BINDBEE_STREAMS}
)


# ------------------------------------------------------------------ checks


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    if not RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time")(_date_time)


def check_stream(run: t.Any, stream: str, inputs: dict[str, dict], key: str = "id") -> None:
    """Emitted rows of a stream against the API records they came from (by key)."""
    (message,) = run.schemas(stream)
    stream_schema = message["schema"]
    validator = jsonschema.Draft7Validator(stream_schema, format_checker=FORMATS)
    rows = run.records(stream)
    assert sorted(r[key] for r in rows) == sorted(inputs), stream
    times = {k for k, v in stream_schema["properties"].items() if v.get("format") == "date-time"}
    STATS["records"] += len(rows)
    STATS["long strings"] += sum(
        1 for r in rows for v in r.values() if isinstance(v, str) and len(v) >= 2000
    )
    STATS["huge integers"] += sum(
        1 for r in rows for v in r.values() if isinstance(v, int) and abs(v) >= 2**63
    )
    for row in rows:
        errors = [
            f"{'.'.join(map(str, e.path))}: {e.message[:200]}" for e in validator.iter_errors(row)
        ]
        assert not errors, (stream, errors)
        source = inputs[row[key]]
        for name, sent in source.items():
            if name in times:
                check_instant(stream, name, sent, row[name])
            elif name in stream_schema["properties"] and isinstance(sent, (str, bool, int, float)):
                assert row[name] == sent, (stream, name)


def check_instant(stream: str, name: str, sent: str | None, got: str | None) -> None:
    if sent is None:
        assert got is None, (stream, name)
        return
    assert got is not None, (stream, name, sent)
    assert ISO_UTC.match(got), (stream, name, sent, got)
    instant = datetime.fromisoformat(got.replace("Z", "+00:00"))
    assert instant == INSTANTS[sent], (stream, name, sent, got)
    STATS["timestamps"] += 1
    STATS[f"form {FORM_OF[sent]}"] += 1


def serve(sandbox: Sandbox, provider: str, path: str, items: list[dict]) -> None:
    """The only page of an endpoint, pre-encoded (huge integers included)."""
    if provider == "kombo":
        envelope: dict = {"status": "success", "data": {"next": None, "results": items}}
    else:
        envelope = {"cursor": None, "page_size": len(items), "items": items}
    body = json.dumps(envelope, ensure_ascii=False)
    sandbox.inject(Fault(kind="status", status=200, provider=provider, path=path, body=body))


@pytest.fixture(scope="module")
def sb(request: pytest.FixtureRequest) -> t.Iterator[Sandbox]:
    with Sandbox(
        seed=1, kombo_users=1, kombo_courses=1, kombo_skills=1, bindbee_users=1
    ) as sandbox:
        yield sandbox
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not STATS:
        return
    forms = ", ".join(f"{k[5:]} {n}" for k, n in sorted(STATS.items()) if k.startswith("form "))
    with capture.global_and_fixture_disabled():
        reporter.write_line(
            f"\nproperties: {STATS['examples kombo']} Kombo and {STATS['examples bindbee']} "
            f"Bindbee examples, {STATS['records']} records checked, {STATS['timestamps']} "
            f"timestamps ({forms}), {STATS['long strings']} long strings, "
            f"{STATS['huge integers']} integers beyond 64 bits"
        )


PROPERTY_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY_SETTINGS
@given(pages=KOMBO_PAGES)
def test_kombo_records_come_out_typed_and_unchanged(sb, pages):
    STATS["examples kombo"] += 1
    sb.clear_faults()
    for path, items in pages.items():
        serve(sb, "kombo", path, items)
    run = run_tap_exact(kombo_config(sb))
    assert run.error is None, repr(run.error)
    for path, (stream, nested, nesting) in KOMBO_ENDPOINTS.items():
        key = primary_key("kombo", stream)
        check_stream(run, stream, {r[key]: r for r in pages[path]}, key)
        if nested is None:
            continue
        key = primary_key("kombo", nested)
        children = {}
        for parent in pages[path]:
            for child in parent.get(nesting) or ():
                children[child[key]] = derived(nested, parent, child)
        check_stream(run, nested, children, key)


def derived(stream: str, parent: dict, child: dict) -> dict:
    """A nested row's input fields, including those it takes from its parent."""
    row = dict(child)
    if stream == "progress":
        row["user_id"] = parent["id"]
        row["user_changed_at"] = parent.get("changed_at")
        row["_sdc_deleted_at"] = parent.get("remote_deleted_at")
    else:
        row.setdefault("course_id", parent["id"])
        row["_sdc_deleted_at"] = child.get("remote_deleted_at") or parent.get("remote_deleted_at")
    return row


@PROPERTY_SETTINGS
@given(pages=BINDBEE_PAGES)
def test_bindbee_records_come_out_typed_and_unchanged(sb, pages):
    STATS["examples bindbee"] += 1
    sb.clear_faults()
    for stream, items in pages.items():
        serve(sb, "bindbee", f"/api/lms/v1/{stream}", items)
    run = run_tap_exact(bindbee_config(sb))
    assert run.error is None, repr(run.error)
    for stream, items in pages.items():
        key, relations = primary_key("bindbee", stream), relations_of("bindbee", stream)
        inputs = {}
        for item in items:
            row = dict(item)
            for name in relations:
                row.pop(name, None)  # checked below: objects become their ids
            inputs[item[key]] = row
        check_stream(run, stream, inputs, key)
        emitted = {r[key]: r for r in run.records(stream)}
        for item in items:
            for name in relations:
                if name in item:
                    assert emitted[item[key]][name] == ids_of(item[name]), (stream, name)


def ids_of(relation: t.Any) -> t.Any:
    if isinstance(relation, dict):
        return relation["id"]
    if isinstance(relation, list):
        return [ids_of(r) for r in relation]
    return relation


# ------------------------------------------------------------------ not timestamps


@pytest.mark.parametrize(
    "bad", ["2024-02-30T10:00:00.000Z", "2024-13-01T00:00:00.000Z", "2024-01-01T25:61:00.000Z"]
)
def test_impossible_timestamps_in_the_usual_shape_become_null(sb, bad):
    """Kombo's usual 24-character shape is still parsed: Feb 30, month 13, hour 25 -> null."""
    sb.clear_faults()
    serve(sb, "kombo", "/lms/skills", [{"id": "skill-1", "name": "x", "changed_at": bad}])
    run = run_tap(kombo_config(sb), select={"skills"})
    (row,) = run.records("skills")
    assert row["changed_at"] is None, row["changed_at"]


def test_text_that_is_no_timestamp_becomes_null_with_a_warning(sb):
    sb.clear_faults()
    items = [
        {"id": "e-1", "start_date": "next Tuesday", "modified_at": "2024-01-01T00:00:00Z"},
        {"id": "e-2", "start_date": "2024-02-30", "modified_at": "0000-00-00 00:00:00"},
    ]
    serve(sb, "bindbee", "/api/lms/v1/enrollments", items)
    run = run_tap(bindbee_config(sb), select={"enrollments"})
    rows = {r["id"]: r for r in run.records("enrollments")}
    assert rows["e-1"]["start_date"] is None
    assert rows["e-1"]["modified_at"] == "2024-01-01T00:00:00.000000Z"
    assert rows["e-2"]["start_date"] is None
    assert rows["e-2"]["modified_at"] is None
    assert "not a timestamp" in run.log

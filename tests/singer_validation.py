"""Check a run's Singer output as a target would receive it.

`validate_singer_output(messages)` checks every RECORD against the latest SCHEMA message of
its stream (JSON Schema, Draft 7 unless the schema names another draft, with `date-time`
checked as RFC 3339: `T` separator, ASCII digits, `Z` or a numeric offset), every key
property present and non-null, and each key unique per stream. It raises AssertionError
listing the problems, and returns the number of records per stream.

`jsonschema` is a test dependency (the `test` extra); its own `date-time` check needs
the optional `rfc3339-validator`, so ours is built in. `tests/conftest.py`'s `run_tap`
runs this on every in-process run, and the hostile tests on every CLI run.
"""

from __future__ import annotations

import json
import re
import typing as t
from collections import Counter
from datetime import datetime

from jsonschema import Draft7Validator, FormatChecker
from jsonschema.validators import validator_for

KNOWN_TYPES = {"SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION", "BATCH"}
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time")
def is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # formats only constrain strings
    if not _RFC3339.fullmatch(value):
        return False
    try:  # ranges: month 13, Feb 30, hour 24, ...
        datetime.fromisoformat(re.sub(r"Z$", "+00:00", value.upper()))
    except ValueError:
        return False
    return True


def singer_problems(messages: t.Iterable[dict], limit: int = 20) -> tuple[list[str], Counter]:
    """(problems, records per stream) of a message sequence."""
    problems: list[str] = []
    counts: Counter[str] = Counter()
    validators: dict[str, t.Any] = {}
    keys: dict[str, list[str]] = {}
    seen: dict[str, set[tuple]] = {}
    for n, message in enumerate(messages):
        kind = message.get("type")
        stream = str(message.get("stream"))
        if kind not in KNOWN_TYPES:
            problems.append(f"message {n}: unknown type {kind!r}")
        elif kind == "SCHEMA":
            schema = message["schema"]
            cls = validator_for(schema, default=Draft7Validator)
            cls.check_schema(schema)
            validators[stream] = cls(schema, format_checker=FORMATS)
            keys[stream] = list(message.get("key_properties") or ())
        elif kind == "RECORD":
            record = message.get("record")
            counts[stream] += 1
            if stream not in validators:
                problems.append(f"message {n}: RECORD of {stream} before its SCHEMA")
                continue
            where = f"message {n} ({stream} {_short(record)})"
            for error in validators[stream].iter_errors(record):
                path = ".".join(str(p) for p in error.absolute_path) or "(record)"
                problems.append(f"{where}: {path}: {error.message[:160]}")
            if not isinstance(record, dict):
                continue
            key = tuple(record.get(k) for k in keys[stream])
            missing = [k for k in keys[stream] if record.get(k) is None]
            if missing:
                problems.append(f"{where}: key properties null or missing: {missing}")
            elif key in seen.setdefault(stream, set()):
                problems.append(f"{where}: duplicate key {key}")
            else:
                seen[stream].add(key)
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems, counts


def validate_singer_output(messages: t.Iterable[dict]) -> Counter:
    """Raise AssertionError listing every problem; return the records per stream."""
    problems, counts = singer_problems(messages)
    assert not problems, "Singer output problems:\n" + "\n".join(problems)
    return counts


def _short(record: t.Any) -> str:
    text = json.dumps(record, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."

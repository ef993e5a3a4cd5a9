"""Helpers shared by the Airbyte tests: message validation with the protocol's own models
(`airbyte-protocol-models`), and what the sandbox holds per Kombo stream."""

from __future__ import annotations

import json
import typing as t
from collections import Counter

from airbyte_protocol.models import AirbyteMessage

if t.TYPE_CHECKING:
    from tap_lms_unified.sandbox import Sandbox


FIELD_OF_TYPE = {
    "RECORD": "record",
    "STATE": "state",
    "LOG": "log",
    "SPEC": "spec",
    "CONNECTION_STATUS": "connectionStatus",
    "CATALOG": "catalog",
    "TRACE": "trace",
}
#: Messages validated in this session, by type.
VALIDATED: Counter[str] = Counter()


def validate(message: dict) -> None:
    """Valid for the protocol's models, with the field of its type, and then some."""
    model = AirbyteMessage.parse_obj(message)
    kind = message["type"]
    field = FIELD_OF_TYPE[kind]
    assert isinstance(message.get(field), dict), f"{kind} without {field}"
    assert set(message) == {"type", field}, message.keys()
    if kind == "RECORD":
        assert isinstance(message["record"]["emitted_at"], int)
        assert isinstance(message["record"]["data"], dict)
    elif kind == "STATE":
        assert model.state is not None
        assert message["state"]["type"] == "STREAM"
        assert message["state"]["stream"]["stream_descriptor"]["name"]
        assert isinstance(message["state"]["stream"]["stream_state"], dict)
    elif kind == "TRACE":
        trace = message["trace"]
        assert isinstance(trace["emitted_at"], int)
        sub = {"ERROR": "error", "STREAM_STATUS": "stream_status"}[trace["type"]]
        assert isinstance(trace.get(sub), dict)
    VALIDATED[kind] += 1


def parse(stdout: bytes) -> list[dict]:
    messages = []
    for line in stdout.split(b"\n"):
        if line.strip():
            message = json.loads(line)
            validate(message)
            messages.append(message)
    return messages


def expected_kombo_counts(sandbox: Sandbox, tenants: t.Iterable[str]) -> Counter[str]:
    """Rows per Kombo stream the sandbox serves (deleted records included)."""
    counts: Counter[str] = Counter()
    for tenant in tenants:
        users = sandbox.records("kombo", tenant, "users")
        courses = sandbox.records("kombo", tenant, "courses")
        counts["users"] += len(users)
        counts["progress"] += sum(len(u.get("progress") or ()) for u in users)
        counts["course_progressions"] += len(
            sandbox.records("kombo", tenant, "course_progressions")
        )
        counts["courses"] += len(courses)
        counts["course_revisions"] += sum(len(c.get("revisions") or ()) for c in courses)
        counts["skills"] += len(sandbox.records("kombo", tenant, "skills"))
    return counts

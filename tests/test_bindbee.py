"""Bindbee extraction against the sandbox over real HTTP: paging, relations, versions, limits."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tap_lms_unified.errors import AuthenticationError, LmsAPIError
from tap_lms_unified.sandbox import SANDBOX_API_KEY, Fault
from tap_lms_unified.tap import TapLmsUnified
from tests.conftest import (
    BINDBEE_STREAMS,
    BINDBEE_TOKEN,
    assert_unique_keys,
    bindbee_config,
    run_tap,
)

STREAMS = BINDBEE_STREAMS
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
CONNECTOR = "acme"


def stored(sb, model: str) -> list[dict]:
    return sb.records("bindbee", CONNECTOR, model)


def test_catalog_lists_only_the_providers_streams(sandbox):
    tap = TapLmsUnified(config=bindbee_config(sandbox), validate_config=True)
    assert set(tap.streams) == set(STREAMS)
    for stream in tap.streams.values():
        assert stream.primary_keys == ("id",)
        assert stream.replication_method == "FULL_TABLE"


def test_full_sync_every_record_once_through_empty_pages(sandbox):
    sandbox.set_option(bindbee_empty_page_every=2)
    run = run_tap(bindbee_config(sandbox))
    for stream in STREAMS:
        ids = assert_unique_keys(run, stream, ("id",))
        assert sorted(i for (i,) in ids) == sorted(r["id"] for r in stored(sandbox, stream)), stream
    users = [r for r in sandbox.requests if r.path == "/api/lms/v1/users"]
    assert len(users) >= 4  # 40 users in pages of 15, plus the empty pages
    assert any(r.params.get("cursor") for r in users)


def test_relations_point_at_existing_ids(sandbox):
    run = run_tap(bindbee_config(sandbox))
    ids = {s: {r["id"] for r in run.records(s)} for s in STREAMS}
    enrollments = run.records("enrollments")
    assert enrollments
    for e in enrollments:
        assert e["user"] in ids["users"]
        assert e["course"] in ids["courses"]
        assert e["completion"] is None or e["completion"] in ids["completions"]
    for c in run.records("completions"):
        assert c["user"] in ids["users"]
        assert c["course"] in ids["courses"]
        assert c["content"] is None or c["content"] in ids["contents"]
        assert c["score"] is None or isinstance(c["score"], int)
    for course in run.records("courses"):
        assert set(course["contents"] or ()) <= ids["contents"]
        assert set(course["skills"] or ()) <= ids["skills"]
        assert set(course["categories"] or ()) <= ids["categories"]


def test_plain_string_dates_come_out_as_iso_utc_or_null(sandbox):
    run = run_tap(bindbee_config(sandbox), select={"enrollments", "completions"})
    values = [e["start_date"] for e in run.records("enrollments")]
    values += [c[k] for c in run.records("completions") for k in ("started_at", "completed_at")]
    assert any(v is None for v in values)
    assert all(v is None or ISO_UTC.match(v) for v in values)
    assert all(ISO_UTC.match(r["modified_at"]) for r in run.records("enrollments"))


def test_activate_version_and_deleted_record_absent_from_second_version(sandbox):
    first = run_tap(bindbee_config(sandbox), select={"users"})
    versions = [m for m in first.messages if m["type"] == "ACTIVATE_VERSION"]
    assert [m["stream"] for m in versions] == ["users"]
    gone = sandbox.mutate("bindbee", CONNECTOR, "users", change=2, delete=3)
    second = run_tap(bindbee_config(sandbox), select={"users"})
    v2 = [m for m in second.messages if m["type"] == "ACTIVATE_VERSION"]
    assert v2
    assert v2[0]["version"] >= versions[0]["version"]
    second_ids = {r["id"] for r in second.records("users")}
    assert not set(gone["deleted"]) & second_ids
    assert set(gone["changed"]) <= second_ids
    assert all(m["version"] == v2[-1]["version"] for m in second.messages if m["type"] == "RECORD")


def test_activate_version_can_be_turned_off(sandbox):
    run = run_tap(bindbee_config(sandbox, emit_activate_version_messages=False), select={"skills"})
    assert run.by_type["ACTIVATE_VERSION"] == 0
    assert run.records("skills")


def test_raw_data_and_custom_fields_settings(sandbox):
    run_tap(bindbee_config(sandbox, include_raw_data=True), select={"skills"})
    params = [r.params for r in sandbox.requests if r.path == "/api/lms/v1/skills"]
    assert {p["include_raw_data"] for p in params} == {"true"}
    assert {p["include_custom_fields"] for p in params} == {"true"}
    sandbox.reset_requests()
    run = run_tap(bindbee_config(sandbox, include_custom_fields=False), select={"skills"})
    params = [r.params for r in sandbox.requests if r.path == "/api/lms/v1/skills"]
    assert {p["include_custom_fields"] for p in params} == {"false"}
    assert all(r.get("raw_data") is None for r in run.records("skills"))


def test_429_with_retry_after_is_honoured(sandbox):
    sandbox.inject(
        Fault(
            provider="bindbee",
            path="/api/lms/v1/skills",
            kind="status",
            status=429,
            headers={"Retry-After": "1"},
            after=1,
        )
    )
    run = run_tap(bindbee_config(sandbox, page_size=5), select={"skills"})
    assert sorted(r["id"] for r in run.records("skills")) == sorted(
        r["id"] for r in stored(sandbox, "skills")
    )
    log = [r for r in sandbox.requests if r.path == "/api/lms/v1/skills"]
    assert [r.status for r in log].count(429) == 1
    # the retry asked for the same cursor as the throttled request
    throttled = next(i for i, r in enumerate(log) if r.status == 429)
    assert log[throttled + 1].params.get("cursor") == log[throttled].params.get("cursor")
    assert log[throttled + 1].time - log[throttled].time >= 1.0


def test_limiter_keeps_a_burst_under_the_budget(sandbox):
    """20 requests against a budget of 8 per window: the tap waits, the sandbox never says 429."""
    window = 2.0
    sandbox.set_option(bindbee_budget_per_minute=8, bindbee_budget_window_s=window)

    def short_window(tap: TapLmsUnified) -> None:
        # the real window is 60 s; same logic, shorter
        tap.run.tenants[CONNECTOR].budget.window = window

    run = run_tap(
        bindbee_config(sandbox, page_size=2, max_requests_per_minute=8),
        select={"users"},
        prepare=short_window,
    )
    assert len(run.records("users")) == 40
    log = [r for r in sandbox.requests if r.path.startswith("/api/lms/v1/")]
    assert len(log) >= 20
    assert all(r.status != 429 for r in log)
    assert max_in_window(log, window) <= 8


def max_in_window(log, window: float) -> int:
    times = sorted(r.time for r in log)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (401, {"detail": "Invalid token"}, AuthenticationError, ["401", "Invalid token"]),
        (403, {"detail": "Forbidden"}, AuthenticationError, ["403", "category"]),
        (
            422,
            {"detail": [{"loc": ["query", "page_size"], "msg": "must be <= 200", "type": "x"}]},
            LmsAPIError,
            ["422", "query.page_size: must be <= 200"],
        ),
    ],
)
def test_client_errors_are_clear(sandbox, status, body, kind, words):
    sandbox.inject(Fault(provider="bindbee", kind="status", status=status, body=body))
    run = run_tap(bindbee_config(sandbox), select={"users"}, expect_error=True)
    assert isinstance(run.error, kind)
    for word in ["GET /api/lms/v1/users", *words]:
        assert word in str(run.error)


def test_secrets_absent_from_all_output(sandbox):
    sandbox.inject(Fault(provider="bindbee", kind="status", status=503))
    run = run_tap(bindbee_config(sandbox))
    assert run.records("users")
    bad = run_tap(
        bindbee_config(sandbox, connector_token="not-a-real-token-xyz"), expect_error=True
    )
    assert isinstance(bad.error, AuthenticationError)
    for text in (run.text, bad.text):
        assert SANDBOX_API_KEY not in text
        assert BINDBEE_TOKEN not in text
        assert "not-a-real-token-xyz" not in text
    assert Counter(m["type"] for m in run.messages)["RECORD"] > 0

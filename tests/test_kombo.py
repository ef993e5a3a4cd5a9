"""Kombo extraction against the sandbox over real HTTP: paging, pairs, incremental, errors."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime

import pytest

from tap_lms_unified.errors import AuthenticationError, IntegrationNotReadyError
from tap_lms_unified.sandbox import SANDBOX_API_KEY, Fault
from tap_lms_unified.shaping import utc_iso
from tests.conftest import (
    KOMBO_STREAMS,
    KOMBO_TENANT,
    assert_unique_keys,
    bookmark,
    kombo_config,
    primary_key,
    primary_keys,
    run_tap,
)

UPDATED_AFTER = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def walks(sb, path: str) -> int:
    """How many walks of an endpoint the sandbox saw (a walk = one request without cursor)."""
    return sum(1 for r in sb.requests if r.path == path and "cursor" not in r.params)


def test_full_sync_every_record_once(sandbox):
    run = run_tap(kombo_config(sandbox))
    stored = {
        name: sandbox.records("kombo", KOMBO_TENANT, model)
        for name, model in [
            ("users", "users"),
            ("course_progressions", "course_progressions"),
            ("courses", "courses"),
            ("skills", "skills"),
        ]
    }
    for stream, records in stored.items():
        ids = assert_unique_keys(run, stream, primary_keys("kombo", stream))
        assert sorted(i for (i,) in ids) == sorted(r["id"] for r in records), stream
    # several pages were needed (page_size 25 < 60 users)
    user_pages = [r for r in sandbox.requests if r.path == "/lms/users"]
    assert len(user_pages) >= 3
    # every page re-sent the same filters
    assert {r.params.get("include_deleted") for r in user_pages} == {"true"}
    assert {r.params.get("page_size") for r in user_pages} == {"25"}


def test_progress_rows_equal_nested_items(sandbox):
    run = run_tap(kombo_config(sandbox))
    expected = []
    for user in sandbox.records("kombo", KOMBO_TENANT, "users"):
        for item in user["progress"]:
            expected.append((user["id"], item))
    rows = run.records("progress")
    pk = primary_key("kombo", "progress")
    assert_unique_keys(run, "progress", (pk,))
    assert len(rows) == len(expected) == 60 * 3
    by_id = {r[pk]: r for r in rows}
    for user_id, item in expected:
        row = by_id[item[pk]]
        assert row["user_id"] == user_id
        for key, value in item.items():
            if key in ("enrollment_date", "completion_date"):
                assert row[key] == utc_iso(value)
            else:
                assert row[key] == value, (key, row[key], value)
    # users carry no nested progress
    assert all("progress" not in u for u in run.records("users"))


def test_paired_streams_walk_once_and_one_schema_each(sandbox):
    run = run_tap(kombo_config(sandbox))
    assert walks(sandbox, "/lms/users") == 1
    assert walks(sandbox, "/lms/courses") == 1
    for stream in KOMBO_STREAMS:
        assert len(run.schemas(stream)) == 1, stream
    # revisions: one row per nested revision, with the course's id
    courses = sandbox.records("kombo", KOMBO_TENANT, "courses")
    expected = {(rev["id"], c["id"]) for c in courses for rev in c["revisions"]}
    got = {(r["id"], r["course_id"]) for r in run.records("course_revisions")}
    assert got == expected
    assert all("revisions" not in c for c in run.records("courses"))
    # state does not grow with the data: one bookmark per stream and tenant
    state = run.final_state
    assert set(state["bookmarks"]) == set(KOMBO_STREAMS)
    for stream in KOMBO_STREAMS:
        partitions = state["bookmarks"][stream]["partitions"]
        assert [p["context"] for p in partitions] == [{"integration_id": KOMBO_TENANT}]
        assert ISO_UTC.match(bookmark(state, stream))
    assert len(str(state)) < 3000


@pytest.mark.parametrize(("selected", "walked"), [({"progress"}, 1), ({"users"}, 1)])
def test_one_stream_of_a_pair_alone(sandbox, selected, walked):
    run = run_tap(kombo_config(sandbox), select=selected)
    assert run.streams() == selected
    assert walks(sandbox, "/lms/users") == walked
    assert walks(sandbox, "/lms/courses") == 0


def test_current_user_shape_gives_empty_progress(sandbox):
    sandbox.set_option(kombo_legacy_users=False)
    run = run_tap(kombo_config(sandbox))
    assert len(run.records("users")) == 60
    assert run.records("progress") == []
    assert len(run.schemas("progress")) == 1


def test_records_are_typed_for_targets(sandbox):
    run = run_tap(kombo_config(sandbox))
    for stream in KOMBO_STREAMS:
        schema = run.schemas(stream)[0]["schema"]["properties"]
        times = [k for k, v in schema.items() if v.get("format") == "date-time"]
        assert times, stream
        for record in run.records(stream):
            for key in times:
                assert record.get(key) is None or ISO_UTC.match(record[key]), (stream, key)
    deleted = [u for u in run.records("users") if u["remote_deleted_at"]]
    assert deleted, "the sandbox serves deleted users with include_deleted=true"
    assert all(u["_sdc_deleted_at"] == u["remote_deleted_at"] for u in deleted)
    assert all(
        u["_sdc_deleted_at"] is None for u in run.records("users") if not u["remote_deleted_at"]
    )


def test_incremental_second_run_gets_exactly_the_changes(sandbox):
    first = run_tap(kombo_config(sandbox))
    users_bookmark = bookmark(first.final_state, "users")
    assert ISO_UTC.match(users_bookmark)
    changed = sandbox.mutate("kombo", KOMBO_TENANT, "users", change=4, delete=2)
    sandbox.reset_requests()

    second = run_tap(kombo_config(sandbox), state=first.final_state, select={"users", "progress"})
    sent = [r.params for r in sandbox.requests if r.path == "/lms/users"]
    assert sent
    assert all(p["updated_after"] == sent[0]["updated_after"] for p in sent)
    updated_after = sent[0]["updated_after"]
    assert UPDATED_AFTER.match(updated_after)
    # bookmark minus the 5-minute lookback
    assert utc_iso(updated_after)[:16] <= users_bookmark[:16]
    # exactly the records the API holds as changed since updated_after
    threshold = utc_iso(updated_after)
    expected = {
        u["id"]
        for u in sandbox.records("kombo", KOMBO_TENANT, "users")
        if utc_iso(u["changed_at"]) >= threshold
    }
    got = {u["id"] for u in second.records("users")}
    assert got == expected
    assert set(changed["changed"]) | set(changed["deleted"]) <= got
    assert len(got) < 60
    deleted = {u["id"]: u for u in second.records("users") if u["id"] in changed["deleted"]}
    assert all(u["_sdc_deleted_at"] for u in deleted.values())
    progress_users = {p["user_id"] for p in second.records("progress")}
    assert progress_users == got
    assert all(p["_sdc_deleted_at"] for p in second.records("progress") if p["user_id"] in deleted)


def test_bookmark_never_passes_the_sync_start(sandbox):
    """A changed_at ahead of the tap's clock must not push the bookmark past the sync start."""
    skill = sandbox.records("kombo", KOMBO_TENANT, "skills")[0]
    skill["changed_at"] = "2099-01-01T00:00:00.000Z"
    body = {"status": "success", "data": {"next": None, "results": [skill]}}
    sandbox.inject(
        Fault(provider="kombo", path="/lms/skills", kind="status", status=200, body=body)
    )
    now = datetime.now(UTC)
    before = utc_iso(now.replace(microsecond=now.microsecond // 1000 * 1000).isoformat())
    run = run_tap(kombo_config(sandbox), select={"skills"})
    after = utc_iso(datetime.now(UTC).isoformat())
    assert run.records("skills")[0]["changed_at"] == "2099-01-01T00:00:00.000000Z"
    assert before <= bookmark(run.final_state, "skills") <= after


def test_course_revision_change_returns_its_course(sandbox):
    first = run_tap(kombo_config(sandbox), select={"courses", "course_revisions"})
    changed = sandbox.mutate("kombo", KOMBO_TENANT, "courses", change=1, delete=0)
    second = run_tap(
        kombo_config(sandbox), select={"courses", "course_revisions"}, state=first.final_state
    )
    assert changed["changed"][0] in {c["id"] for c in second.records("courses")}
    assert walks(sandbox, "/lms/courses") == 2


def test_start_date_is_sent_as_updated_after(sandbox):
    run_tap(kombo_config(sandbox, start_date="2024-06-01T00:00:00+02:00"), select={"skills"})
    sent = {r.params.get("updated_after") for r in sandbox.requests if r.path == "/lms/skills"}
    # The filter is exclusive as far as Kombo documents it: sent a millisecond earlier.
    assert sent == {"2024-05-31T21:59:59.999Z"}


def test_retries_429_and_503_then_completes(sandbox):
    sandbox.inject(
        Fault(
            provider="kombo",
            path="/lms/skills",
            kind="status",
            status=429,
            headers={"ratelimit-reset": "1", "ratelimit-remaining": "0", "ratelimit-limit": "10"},
        )
    )
    sandbox.inject(Fault(provider="kombo", path="/lms/skills", kind="status", status=503, after=1))
    run = run_tap(kombo_config(sandbox), select={"skills"})
    assert len(run.records("skills")) == len(sandbox.records("kombo", KOMBO_TENANT, "skills"))
    statuses = Counter(r.status for r in sandbox.requests if r.path == "/lms/skills")
    assert statuses[429] == 1
    assert statuses[503] == 1
    assert f"Tenant {KOMBO_TENANT}: retrying GET /lms/skills" in run.log


def test_exhausted_retries_name_endpoint_and_status(sandbox):
    sandbox.inject(Fault(provider="kombo", path="/lms/skills", kind="status", status=502, times=9))
    run = run_tap(kombo_config(sandbox, max_retries=2), select={"skills"}, expect_error=True)
    assert run.error is not None
    assert "GET /lms/skills" in str(run.error)
    assert "502" in str(run.error)
    assert sum(1 for r in sandbox.requests if r.path == "/lms/skills") == 3


def test_401_is_an_authentication_error_without_the_key(sandbox):
    run = run_tap(
        kombo_config(sandbox, api_key="wrong-key-1234567"), select={"users"}, expect_error=True
    )
    assert isinstance(run.error, AuthenticationError)
    message = str(run.error)
    assert "GET /lms/users" in message
    assert "401" in message
    assert "api_key" in message
    assert "wrong-key-1234567" not in run.text
    assert SANDBOX_API_KEY not in run.text


def test_error_envelope_is_rendered(sandbox):
    sandbox.inject(
        Fault(
            provider="kombo",
            path="/lms/users",
            kind="status",
            status=409,
            body={
                "status": "error",
                "error": {
                    "code": "INTEGRATION.SETUP_SYNC_PENDING",
                    "title": "Integration not ready",
                    "message": "The initial sync has not finished.",
                    "log_url": "https://app.kombo.dev/logs?id=abc",
                },
            },
        )
    )
    run = run_tap(kombo_config(sandbox), select={"users"}, expect_error=True)
    assert isinstance(run.error, IntegrationNotReadyError)
    message = str(run.error)
    for part in (
        "GET /lms/users",
        "409",
        "INTEGRATION.SETUP_SYNC_PENDING",
        "The initial sync has not finished.",
        "https://app.kombo.dev/logs?id=abc",
    ):
        assert part in message


def test_secrets_absent_from_all_output(sandbox):
    sandbox.inject(Fault(provider="kombo", path="/lms/users", kind="status", status=500))
    run = run_tap(kombo_config(sandbox))
    assert run.records("users")
    assert SANDBOX_API_KEY not in run.text

"""Tests of the local Kombo/Bindbee sandbox server (real HTTP, in-process server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tap_lms_unified.sandbox import SANDBOX_API_KEY, Fault, Sandbox

ACME = "sandbox:acme"
TOKEN = "sandbox-connector-acme"
KOMBO_HEADERS = {"Authorization": f"Bearer {SANDBOX_API_KEY}", "X-Integration-Id": ACME}
BINDBEE_HEADERS = {"Authorization": f"Bearer {SANDBOX_API_KEY}", "x-connector-token": TOKEN}
SMALL = {
    "kombo_users": 40,
    "progress_per_user": 2,
    "kombo_courses": 6,
    "kombo_skills": 5,
    "bindbee_users": 30,
    "bindbee_courses": 5,
}

CURRENT_USER_KEYS = {
    "id",
    "remote_id",
    "first_name",
    "last_name",
    "work_email",
    "status",
    "remote_created_at",
    "remote_deleted_at",
    "changed_at",
    "remote_data",
    "custom_fields",
    "integration_fields",
}
LEGACY_USER_KEYS = {
    "id",
    "remote_id",
    "first_name",
    "last_name",
    "work_email",
    "status",
    "remote_created_at",
    "progress",
    "changed_at",
    "remote_data",
    "remote_deleted_at",
}
PROGRESS_KEYS = {
    "course_id",
    "progress_id",
    "status",
    "enrollment_date",
    "completion_date",
    "score",
    "duration",
    "comments",
}
BINDBEE_HEAD = {"id", "remote_id", "modified_at", "raw_data", "custom_fields"}
BINDBEE_KEYS = {
    "users": {"first_name", "last_name", "middle_name", "email_address", "phone_number", "status"},
    "enrollments": {"user", "course", "start_date", "completion"},
    "completions": {
        "user",
        "course",
        "content",
        "score",
        "grade",
        "started_at",
        "completed_at",
        "time_duration",
    },
    "courses": {
        "name",
        "description",
        "cover_image",
        "url",
        "duration",
        "languages",
        "categories",
        "contents",
        "skills",
        "instructors",
        "status",
    },
    "contents": {
        "title",
        "description",
        "languages",
        "cover_image",
        "url",
        "duration",
        "categories",
        "skills",
        "courses",
        "order",
        "provider",
        "status",
    },
    "skills": {"name", "status"},
    "categories": {"name", "description", "status"},
}


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(seed=7, **SMALL) as sandbox:  # type: ignore[arg-type]
        yield sandbox


def kombo(sb: Sandbox, model: str, **params: Any) -> requests.Response:
    return requests.get(f"{sb.kombo_url}/lms/{model}", headers=KOMBO_HEADERS, params=params)


def bindbee(sb: Sandbox, model: str, **params: Any) -> requests.Response:
    url = f"{sb.bindbee_url}/api/lms/v1/{model}"
    return requests.get(url, headers=BINDBEE_HEADERS, params=params)


def kombo_walk(sb: Sandbox, model: str, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    with requests.Session() as session:
        for _ in range(1000):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            resp = session.get(f"{sb.kombo_url}/lms/{model}", headers=KOMBO_HEADERS, params=query)
            assert resp.status_code == 200, resp.text
            data = resp.json()["data"]
            out.extend(data["results"])
            cursor = data["next"]
            if cursor is None:
                return out
    raise AssertionError("pagination did not end")


def bindbee_walk(sb: Sandbox, model: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """All items and the number of empty pages seen."""
    items: list[dict[str, Any]] = []
    empty = 0
    cursor = None
    url = f"{sb.bindbee_url}/api/lms/v1/{model}"
    with requests.Session() as session:
        for _ in range(1000):
            query = {**params, **({"cursor": cursor} if cursor else {})}
            resp = session.get(url, headers=BINDBEE_HEADERS, params=query)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["page_size"] == len(body["items"])
            items.extend(body["items"])
            empty += not body["items"]
            cursor = body["cursor"]
            if cursor is None:
                return items, empty
    raise AssertionError("pagination did not end")


def now_kombo() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- auth and validation --------------------------------------------------------------
def test_kombo_auth_and_tenant_errors(sb: Sandbox) -> None:
    resp = requests.get(f"{sb.kombo_url}/lms/users")
    assert resp.status_code == 401
    body = resp.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "PLATFORM.AUTHENTICATION_INVALID"
    assert set(body["error"]) == {"code", "title", "message", "log_url"}
    assert resp.headers["ratelimit-limit"]

    auth = {"Authorization": KOMBO_HEADERS["Authorization"]}
    resp = requests.get(f"{sb.kombo_url}/lms/users", headers=auth)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"].startswith("PLATFORM.")

    headers = {**auth, "X-Integration-Id": "sandbox:nope"}
    resp = requests.get(f"{sb.kombo_url}/lms/users", headers=headers)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "PLATFORM.INTEGRATION_NOT_FOUND"

    sb.set_option(kombo_not_ready_tenants=[ACME])
    resp = kombo(sb, "users")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "INTEGRATION.SETUP_SYNC_PENDING"


def test_bindbee_auth_errors(sb: Sandbox) -> None:
    url = f"{sb.bindbee_url}/api/lms/v1/users"
    resp = requests.get(url)
    assert resp.status_code == 401
    assert isinstance(resp.json()["detail"], str)
    bad = {**BINDBEE_HEADERS, "x-connector-token": "wrong"}
    assert requests.get(url, headers=bad).status_code == 401
    sb.set_option(bindbee_non_lms_connectors=["acme"])
    resp = requests.get(url, headers=BINDBEE_HEADERS)
    assert resp.status_code == 403
    assert isinstance(resp.json()["detail"], str)


def test_page_size_bounds(sb: Sandbox) -> None:
    assert kombo(sb, "users", page_size=250).status_code == 200
    for bad in (251, 0, "x"):
        resp = kombo(sb, "users", page_size=bad)
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "PLATFORM.INPUT_INVALID"

    assert bindbee(sb, "users", page_size=200).status_code == 200
    resp = bindbee(sb, "users", page_size=201)
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert isinstance(detail, list)
    assert detail[0]["loc"] == ["query", "page_size"]


def test_kombo_updated_after_format(sb: Sandbox) -> None:
    resp = kombo(sb, "users", updated_after="2024-01-01T00:00:00+00:00")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "PLATFORM.INPUT_INVALID"
    assert kombo(sb, "users", updated_after="2024-01-01T00:00:00.000Z").status_code == 200
    assert kombo(sb, "users", updated_after="2024-01-01").status_code == 200


# --- Kombo pagination, shapes, filters ---------------------------------------------------
@pytest.mark.parametrize("model", ["users", "course-progressions", "courses", "skills"])
def test_kombo_walk_returns_every_record_once(sb: Sandbox, model: str) -> None:
    sb.mutate("kombo", ACME, model, delete=2)  # make sure deleted records exist
    stored = sb.records("kombo", ACME, model)
    live = [r["id"] for r in stored if r["remote_deleted_at"] is None]
    walked = kombo_walk(sb, model, page_size=7)
    assert [r["id"] for r in walked] == live  # insertion order, each exactly once
    walked_all = kombo_walk(sb, model, page_size=250, include_deleted="true")
    assert [r["id"] for r in walked_all] == [r["id"] for r in stored]
    assert len(walked_all) > len(walked)


def test_kombo_cursor_bound_to_filters(sb: Sandbox) -> None:
    first = kombo(sb, "users", page_size=5, include_deleted="true").json()["data"]
    resp = kombo(sb, "users", page_size=5, cursor=first["next"])  # filters changed
    assert resp.status_code == 400
    assert kombo(sb, "users", page_size=9, include_deleted="true", cursor=first["next"]).ok
    assert kombo(sb, "users", cursor="garbage!").status_code == 400


def test_kombo_shapes_and_references(sb: Sandbox) -> None:
    users = kombo_walk(sb, "users", include_deleted="true")
    course_ids = {c["id"] for c in sb.records("kombo", ACME, "courses")}
    assert all(set(u) == LEGACY_USER_KEYS for u in users)
    progress = [p for u in users for p in u["progress"]]
    assert all(set(p) == PROGRESS_KEYS for p in progress)
    assert {p["course_id"] for p in progress} <= course_ids
    assert len({p["progress_id"] for p in progress}) == len(progress)

    sb.set_option(kombo_legacy_users=False)
    current = kombo_walk(sb, "users", include_deleted="true")
    assert all(set(u) == CURRENT_USER_KEYS for u in current)
    assert [u["id"] for u in current] == [u["id"] for u in users]

    user_ids = {u["id"] for u in users}
    revisions = {r["id"] for c in sb.records("kombo", ACME, "courses") for r in c["revisions"]}
    skills = {s["id"] for s in sb.records("kombo", ACME, "skills")}
    for prog in kombo_walk(sb, "course-progressions", include_deleted="true"):
        assert prog["user_id"] == prog["user"]["id"]
        assert prog["user_id"] in user_ids
        assert prog["course_revision_id"] in revisions
        assert prog["course_revision"]["course"]["id"] in course_ids
    for course in sb.records("kombo", ACME, "courses"):
        assert 1 <= len(course["revisions"]) <= 3
        for rev in course["revisions"]:
            assert {a["skill"]["id"] for a in rev["skill_assignments"]} <= skills


def test_kombo_updated_after_and_course_revision_quirk(sb: Sandbox) -> None:
    since = now_kombo()
    time.sleep(0.002)
    assert kombo_walk(sb, "users", updated_after=since, include_deleted="true") == []
    changes = sb.mutate("kombo", ACME, "users", change=3, delete=1)
    changed = kombo_walk(sb, "users", updated_after=since, include_deleted="true", page_size=2)
    assert {u["id"] for u in changed} == set(changes["changed"] + changes["deleted"])
    deleted = [u for u in changed if u["id"] in changes["deleted"]]
    assert deleted[0]["remote_deleted_at"] is not None
    visible = kombo_walk(sb, "users", updated_after=since)
    assert {u["id"] for u in visible} == set(changes["changed"])

    course_change = sb.mutate("kombo", ACME, "courses", change=1)
    [course] = kombo_walk(sb, "courses", updated_after=since)
    assert course["id"] == course_change["changed"][0]
    assert course["changed_at"] < since  # the course's own changed_at did not move ...
    assert max(r["changed_at"] for r in course["revisions"]) >= since  # ... a revision did
    assert course["revisions"][-1]["title"].endswith("(updated)")


def test_kombo_budget(sb: Sandbox) -> None:
    sb.set_option(kombo_budget_per_minute=2)
    assert kombo(sb, "skills").headers["ratelimit-remaining"] == "1"
    assert kombo(sb, "skills").status_code == 200
    resp = kombo(sb, "skills")
    assert resp.status_code == 429
    assert resp.json()["error"]["code"] == "PLATFORM.RATE_LIMIT_EXCEEDED"
    assert int(resp.headers["ratelimit-reset"]) >= 1


# --- Bindbee -----------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(BINDBEE_KEYS))
def test_bindbee_walk_and_keys(sb: Sandbox, model: str) -> None:
    items, empty = bindbee_walk(sb, model, page_size=7)
    assert empty == 0
    assert [i["id"] for i in items] == [r["id"] for r in sb.records("bindbee", "acme", model)]
    assert all(set(i) == BINDBEE_HEAD | BINDBEE_KEYS[model] for i in items)
    assert all(i["raw_data"] is None and i["custom_fields"] is None for i in items)


def test_bindbee_include_flags(sb: Sandbox) -> None:
    items = bindbee(sb, "users", include_raw_data="true", include_custom_fields="true").json()
    assert all(isinstance(i["raw_data"], dict) for i in items["items"])
    assert any(isinstance(i["custom_fields"], dict) for i in items["items"])
    resp = bindbee(sb, "users", include_raw_data="maybe")
    assert resp.status_code == 422


def test_bindbee_empty_pages_and_mutations(sb: Sandbox) -> None:
    sb.set_option(bindbee_empty_page_every=2)
    items, empty = bindbee_walk(sb, "users", page_size=4)
    assert empty >= 3
    assert len(items) == len({i["id"] for i in items}) == 30

    result = sb.mutate("bindbee", "acme", "users", change=2, delete=3)
    items, _ = bindbee_walk(sb, "users", page_size=50)
    ids = {i["id"] for i in items}
    assert len(items) == 27
    assert not ids & set(result["deleted"])  # no tombstones: deleted records disappear
    assert set(result["changed"]) <= ids
    assert len(sb.records("bindbee", TOKEN, "users")) == 27  # token accepted as tenant


def test_bindbee_budget(sb: Sandbox) -> None:
    sb.set_option(bindbee_budget_per_minute=3, bindbee_budget_window_s=0.5)
    statuses = [bindbee(sb, "skills").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = bindbee(sb, "skills")
    assert resp.status_code == 429
    assert resp.json() == {"detail": "Rate limit exceeded"}
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    assert int(resp.headers["X-RateLimit-Reset"]) >= int(time.time())
    time.sleep(0.55)
    ok = bindbee(sb, "skills")
    assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Limit"] == "3"


# --- faults ------------------------------------------------------------------------------
def test_fault_status_uses_provider_error_shapes(sb: Sandbox) -> None:
    sb.inject(Fault(kind="status", provider="kombo", status=429))
    sb.inject(Fault(kind="status", provider="bindbee", status=503, after=1))
    resp = kombo(sb, "users")
    assert resp.status_code == 429
    assert resp.json()["error"]["code"] == "PLATFORM.RATE_LIMIT_EXCEEDED"
    assert kombo(sb, "users").status_code == 200  # times=1
    assert bindbee(sb, "users").status_code == 200  # after=1
    resp = bindbee(sb, "users")
    assert resp.status_code == 503
    assert isinstance(resp.json()["detail"], str)
    sb.inject({"kind": "status", "status": 500, "body": "oops", "headers": {"X-Why": "test"}})
    resp = bindbee(sb, "users")
    assert (resp.status_code, resp.text, resp.headers["X-Why"]) == (500, "oops", "test")


def test_fault_delay(sb: Sandbox) -> None:
    sb.inject(Fault(kind="delay", seconds=1.0))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{sb.kombo_url}/lms/users", headers=KOMBO_HEADERS, timeout=0.2)
    assert kombo(sb, "users").status_code == 200


def test_fault_reset_and_retry_gets_same_page(sb: Sandbox) -> None:
    first = kombo(sb, "users", page_size=5).json()["data"]
    expected = kombo(sb, "users", page_size=5, cursor=first["next"]).json()
    sb.inject(Fault(kind="reset", path="/lms/users"))
    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        kombo(sb, "users", page_size=5, cursor=first["next"])
    assert kombo(sb, "users", page_size=5, cursor=first["next"]).json() == expected
    assert sb.requests[-2].fault == "reset"


def test_fault_truncate_html_and_bad_envelope(sb: Sandbox) -> None:
    sb.inject(Fault(kind="truncate"))
    resp = kombo(sb, "users")
    assert resp.status_code == 200
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    with pytest.raises(ValueError):  # noqa: PT011 - JSONDecodeError
        resp.json()

    sb.inject(Fault(kind="html200", provider="bindbee"))
    resp = bindbee(sb, "users")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/html")

    sb.inject(Fault(kind="bad_envelope"))
    assert bindbee(sb, "users").json() == {"unexpected": True}


def test_fault_repeat_cursor_and_empty_page(sb: Sandbox) -> None:
    first = kombo(sb, "users", page_size=5).json()["data"]
    sb.inject(Fault(kind="repeat_cursor", provider="kombo"))
    again = kombo(sb, "users", page_size=5, cursor=first["next"]).json()["data"]
    assert again["next"] == first["next"]

    page1 = bindbee(sb, "users", page_size=5).json()
    sb.inject(Fault(kind="empty_page", provider="bindbee"))
    empty = bindbee(sb, "users", page_size=5, cursor=page1["cursor"]).json()
    assert empty["items"] == []
    assert empty["page_size"] == 0
    assert empty["cursor"] is not None
    after_empty = bindbee(sb, "users", page_size=5, cursor=empty["cursor"]).json()
    direct = bindbee(sb, "users", page_size=5, cursor=page1["cursor"]).json()
    assert after_empty["items"] == direct["items"]
    assert [r.fault for r in sb.requests] == [None, "repeat_cursor", None, "empty_page", None, None]


def test_fault_filters_by_tenant_and_path(sb: Sandbox) -> None:
    sb.inject(Fault(kind="status", status=502, tenant="sandbox:globex", times=None))
    sb.inject(Fault(kind="status", status=500, path="/skills", times=None))
    assert kombo(sb, "users").status_code == 200
    assert kombo(sb, "skills").status_code == 500
    globex = {**KOMBO_HEADERS, "X-Integration-Id": "sandbox:globex"}
    assert requests.get(f"{sb.kombo_url}/lms/users", headers=globex).status_code == 502
    sb.clear_faults()
    assert requests.get(f"{sb.kombo_url}/lms/users", headers=globex).status_code == 200


# --- determinism, request log, admin ---------------------------------------------------------
def test_deterministic_for_same_seed() -> None:
    bodies = []
    for _ in range(2):
        with Sandbox(seed=11, kombo_users=20, bindbee_users=10) as box:
            bodies.append(
                (
                    kombo(box, "users", include_deleted="true").json()["data"]["results"],
                    kombo(box, "courses").json()["data"]["results"],
                    bindbee(box, "completions", include_raw_data="true").json()["items"],
                )
            )
    assert bodies[0] == bodies[1]
    with Sandbox(seed=12, kombo_users=20, bindbee_users=10) as other:
        assert kombo(other, "users").json()["data"]["results"] != bodies[0][0]
        globex = {**KOMBO_HEADERS, "X-Integration-Id": "sandbox:globex"}
        resp = requests.get(f"{other.kombo_url}/lms/users", headers=globex)
        acme_ids = {u["id"] for u in kombo(other, "users").json()["data"]["results"]}
        assert not acme_ids & {u["id"] for u in resp.json()["data"]["results"]}


def test_request_log_never_contains_the_token(sb: Sandbox) -> None:
    bindbee(sb, "users", page_size=3)
    kombo(sb, "skills", page_size=3, updated_after="2024-01-01T00:00:00.000Z")
    requests.get(f"{sb.bindbee_url}/api/lms/v1/users", headers={"x-connector-token": TOKEN})
    log = sb.requests
    assert [(e.provider, e.tenant, e.path, e.status) for e in log] == [
        ("bindbee", "acme", "/api/lms/v1/users", 200),
        ("kombo", ACME, "/lms/skills", 200),
        ("bindbee", "acme", "/api/lms/v1/users", 401),
    ]
    assert log[1].params["updated_after"] == "2024-01-01T00:00:00.000Z"
    assert TOKEN not in repr(log)
    admin = requests.get(f"{sb.url}/_sandbox/requests")
    assert TOKEN not in admin.text
    assert len(admin.json()["requests"]) == 3
    options = requests.get(f"{sb.url}/_sandbox/options").text
    assert TOKEN not in options
    sb.reset_requests()
    assert sb.requests == []


def test_admin_endpoints(sb: Sandbox) -> None:
    base = f"{sb.url}/_sandbox"
    assert requests.get(f"{base}/health").json() == {"ok": True}
    payload = {"provider": "kombo", "tenant": ACME, "model": "skills", "change": 1, "delete": 1}
    result = requests.post(f"{base}/mutate", json=payload).json()
    assert len(result["changed"]) == len(result["deleted"]) == 1
    query = {"provider": "kombo", "tenant": ACME, "model": "skills"}
    records = requests.get(f"{base}/records", params=query).json()["records"]
    by_id = {r["id"]: r for r in records}
    assert by_id[result["deleted"][0]]["remote_deleted_at"] is not None
    assert by_id[result["changed"][0]]["name"].endswith("(updated)")

    faults = [{"kind": "status", "status": 503}, {"kind": "bad_envelope"}]
    assert requests.post(f"{base}/faults", json=faults).json()["added"] == 2
    assert kombo(sb, "skills").status_code == 503
    requests.post(f"{base}/faults/clear")
    assert kombo(sb, "skills").status_code == 200
    assert requests.post(f"{base}/faults", json={"kind": "nope"}).status_code == 400

    resp = requests.post(f"{base}/options", json={"kombo_legacy_users": False, "latency_ms": 1})
    assert resp.json()["ok"] is True
    assert "progress" not in kombo(sb, "users").json()["data"]["results"][0]
    assert requests.post(f"{base}/options", json={"nope": 1}).status_code == 400
    requests.post(f"{base}/requests/reset")
    assert requests.get(f"{base}/requests").json() == {"requests": []}


def test_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Sandbox(host="0.0.0.0")


def test_console_script(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    cmd = [sys.executable, "-m", "tap_lms_unified.sandbox", "--port", "0", "--ready-file"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    with subprocess.Popen(
        [*cmd, str(ready), "--kombo-users", "5", "--kombo-shape", "current"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            url = ready.read_text().strip()
            assert line == f"sandbox listening on {url}"
            assert requests.get(f"{url}/_sandbox/health").json() == {"ok": True}
            resp = requests.get(f"{url}/kombo/v1/lms/users", headers=KOMBO_HEADERS)
            assert len(resp.json()["data"]["results"]) <= 5
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_json_is_utf8_with_non_ascii_names(sb: Sandbox) -> None:
    resp = kombo(sb, "users", page_size=250, include_deleted="true")
    assert resp.headers["Content-Type"].startswith("application/json")
    names = json.dumps(resp.json(), ensure_ascii=False)
    assert any(ord(ch) > 127 for ch in names)

"""Many customers in one run: tagging, per-tenant state, isolation, concurrency, shards."""

from __future__ import annotations

import json
import typing as t
from collections import Counter

import pytest

from tap_lms_unified.errors import AuthenticationError, IntegrationNotReadyError, TenantsFailedError
from tap_lms_unified.sandbox import Sandbox
from tests.conftest import (
    TapRun,
    bindbee_tenants_config,
    bookmark,
    kombo_tenants_config,
    run_cli,
    run_tap,
)

KOMBO_TENANTS = ("sandbox:acme", "sandbox:globex", "sandbox:initech")
TOKENS = {"tok-acme-0123456789": "acme", "tok-globex-9876543210": "globex"}


@pytest.fixture
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(
        seed=5,
        kombo_users=30,
        progress_per_user=2,
        kombo_courses=6,
        kombo_skills=5,
        kombo_tenants=KOMBO_TENANTS,
        bindbee_users=25,
        bindbee_courses=5,
        bindbee_tokens=TOKENS,
    ) as sandbox:
        yield sandbox


def kombo(sb: Sandbox, tenants: t.Sequence[str] = KOMBO_TENANTS, **extra: t.Any) -> dict:
    defaults: dict[str, t.Any] = {"page_size": 10, "max_retry_wait_seconds": 1}
    return kombo_tenants_config(sb, tenants, **(defaults | extra))


def bindbee(sb: Sandbox, **extra: t.Any) -> dict:
    defaults: dict[str, t.Any] = {"page_size": 10, "max_retry_wait_seconds": 1}
    return bindbee_tenants_config(sb, TOKENS, **(defaults | extra))


def ids_by_tenant(run: TapRun, stream: str, field: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for record in run.records(stream):
        out.setdefault(record[field], set()).add(record["id"])
    return out


def test_kombo_records_are_tagged_and_state_is_per_tenant(sb):
    run = run_tap(kombo(sb))
    for stream, model in [("users", "users"), ("skills", "skills"), ("courses", "courses")]:
        got = ids_by_tenant(run, stream, "integration_id")
        assert set(got) == set(KOMBO_TENANTS)
        for tenant in KOMBO_TENANTS:
            assert got[tenant] == {r["id"] for r in sb.records("kombo", tenant, model)}
    assert {p["integration_id"] for p in run.records("progress")} == set(KOMBO_TENANTS)
    state = run.final_state
    for stream in ("users", "progress", "skills", "course_progressions"):
        contexts = [p["context"] for p in state["bookmarks"][stream]["partitions"]]
        assert contexts == [{"integration_id": i} for i in KOMBO_TENANTS]
        assert all(bookmark(state, stream, i) for i in KOMBO_TENANTS)
    assert len(json.dumps(state)) < 8000


def test_bindbee_records_carry_the_connector_name_never_the_token(sb):
    run = run_tap(bindbee(sb))
    got = ids_by_tenant(run, "users", "connector_name")
    assert got == {
        name: {r["id"] for r in sb.records("bindbee", name, "users")} for name in TOKENS.values()
    }
    for token in TOKENS:
        assert token not in run.text
    contexts = [p["context"] for p in run.final_state["bookmarks"]["users"]["partitions"]]
    assert contexts == [{"connector_name": "acme"}, {"connector_name": "globex"}]


def test_one_failing_tenant_does_not_stop_the_others(sb):
    sb.set_option(kombo_not_ready_tenants=["sandbox:globex"])
    run = run_tap(kombo(sb), expect_error=True)
    assert isinstance(run.error, TenantsFailedError)
    assert "1 of 3 tenants failed" in str(run.error)
    assert "sandbox:globex" in str(run.error)
    assert "INTEGRATION.SETUP_SYNC_PENDING" in str(run.error)
    got = ids_by_tenant(run, "users", "integration_id")
    assert set(got) == {"sandbox:acme", "sandbox:initech"}
    assert len(got["sandbox:initech"]) == 30
    state = run.final_state
    assert bookmark(state, "users", "sandbox:initech")
    assert bookmark(state, "users", "sandbox:globex") is None
    # globex was tried once, then skipped for the remaining streams
    assert sum(1 for r in sb.requests if r.tenant == "sandbox:globex") == 1
    assert "Tenant sandbox:globex failed on stream" in run.log
    for tenant in KOMBO_TENANTS:
        assert f"Tenant {tenant}: " in run.log  # one summary line each
    assert "Tenant sandbox:acme: ok; records: course_progressions=" in run.log


def test_fail_fast_stops_at_the_first_failure(sb):
    sb.set_option(kombo_not_ready_tenants=["sandbox:acme"])
    run = run_tap(kombo(sb, fail_fast=True), expect_error=True)
    assert isinstance(run.error, IntegrationNotReadyError)
    # the run stopped in its first stream (course_progressions): no later stream ran
    assert run.streams() <= {"course_progressions"}
    assert not run.records("users")


def test_cli_exit_code_and_summary_for_a_failed_bindbee_tenant(sb, tmp_path):
    config = bindbee(sb)
    config["integrations"].append({"connector_token": "tok-revoked-5555555", "name": "revoked"})
    result = run_cli(config, tmp_path)
    assert result.returncode != 0
    assert "1 of 3 tenants failed: revoked" in result.stderr
    assert "HTTP 401" in result.stderr
    records = result.messages
    names = Counter(m["record"]["connector_name"] for m in records if m["type"] == "RECORD")
    assert set(names) == {"acme", "globex"}
    # the full-table streams of this run are not activated: revoked's rows must not vanish
    assert not [m for m in records if m["type"] == "ACTIVATE_VERSION"]
    for token in [*TOKENS, "tok-revoked-5555555"]:
        assert token not in result.stdout + result.stderr


def comparable(run: TapRun) -> list[tuple]:
    """The Singer output without the wall-clock parts."""
    out: list[tuple] = []
    for m in run.messages:
        if m["type"] == "RECORD":
            out.append(("RECORD", m["stream"], json.dumps(m["record"], sort_keys=True)))
        elif m["type"] == "STATE":
            out.append(("STATE", json.dumps(_strip_clock(m["value"]), sort_keys=True)))
        else:
            out.append((m["type"], m["stream"]))
    return out


def _strip_clock(state: dict) -> dict:
    """Bookmarks capped by the run's start differ between runs: keep their presence only."""
    text = json.dumps(state)
    value = json.loads(text)
    for stream in value.get("bookmarks", {}).values():
        for part in stream.get("partitions", []):
            for key in ("replication_key_value", "replication_key_signpost"):
                if key in part:
                    part[key] = "<set>"
    return value


def test_concurrent_output_is_the_sequential_output(sb):
    sb.set_option(latency_ms=5)
    sequential = run_tap(kombo(sb, max_concurrency=1))
    concurrent = run_tap(kombo(sb, max_concurrency=8))
    assert comparable(concurrent) == comparable(sequential)
    # one SCHEMA per stream, whatever the tenants and threads
    assert Counter(m["stream"] for m in concurrent.schemas()) == Counter(
        dict.fromkeys(concurrent.streams(), 1)
    )


def test_state_follows_the_records_it_covers(sb):
    run = run_tap(kombo(sb, max_concurrency=8))
    last_record: dict[tuple[str, str], int] = {}
    for position, m in enumerate(run.messages):
        if m["type"] == "RECORD":
            last_record[m["stream"], m["record"]["integration_id"]] = position
    for position, m in enumerate(run.messages):
        if m["type"] != "STATE":
            continue
        for stream, value in m["value"]["bookmarks"].items():
            for part in value.get("partitions", []):
                if "replication_key_value" in part and "progress_markers" not in part:
                    key = (stream, part["context"]["integration_id"])
                    assert last_record.get(key, -1) < position, (key, position)


def test_limiter_is_per_tenant_and_never_exceeded(sb):
    window = 2.0
    sb.set_option(bindbee_budget_per_minute=6, bindbee_budget_window_s=window)

    def short_window(tap: t.Any) -> None:
        for tenant in tap.run.tenants.values():
            tenant.budget.window = window

    run = run_tap(
        bindbee(sb, page_size=2, max_requests_per_minute=6),
        select={"users"},
        prepare=short_window,
    )
    assert len(run.records("users")) == 50
    log = [r for r in sb.requests if r.path.startswith("/api/lms/v1/")]
    assert all(r.status != 429 for r in log)
    for name in TOKENS.values():
        times = sorted(r.time for r in log if r.tenant == name)
        assert len(times) >= 6
        busiest = max(sum(1 for u in times if s <= u < s + window) for s in times)
        assert busiest <= 6, name


def test_two_shards_make_one_unsharded_run(sb):
    whole = run_tap(kombo(sb))
    shard_a = run_tap(kombo(sb, tenants=KOMBO_TENANTS[:1]))
    shard_b = run_tap(kombo(sb, tenants=KOMBO_TENANTS[1:]))
    for stream in whole.streams():
        union = Counter(
            json.dumps(r, sort_keys=True) for r in shard_a.records(stream) + shard_b.records(stream)
        )
        assert union == Counter(json.dumps(r, sort_keys=True) for r in whole.records(stream))
    for shard, tenants in ((shard_a, KOMBO_TENANTS[:1]), (shard_b, KOMBO_TENANTS[1:])):
        contexts = {
            p["context"]["integration_id"]
            for value in shard.final_state["bookmarks"].values()
            for p in value["partitions"]
        }
        assert contexts == set(tenants)


@pytest.mark.parametrize(
    ("integrations", "message"),
    [
        ([{"integration_id": ""}], "'integrations[0]' needs 'integration_id'"),
        ([{"integration_id": "a:b"}, {"integration_id": "a:b"}], "more than once: a:b"),
    ],
)
def test_bad_integrations_are_refused(sb, integrations, message):
    config = kombo(sb)
    config["integrations"] = integrations
    run = run_tap(config, expect_error=True)
    assert any(message in e for e in run.error.errors)
    assert sb.requests == []


def test_bindbee_connectors_need_names(sb):
    config = bindbee(sb)
    config["integrations"] = [{"connector_token": k} for k in TOKENS]
    run = run_tap(config, expect_error=True)
    assert any("needs a 'name'" in e for e in run.error.errors)


def test_single_tenant_failure_raises_its_own_error(sb):
    run = run_tap(
        {**bindbee(sb), "integrations": [{"connector_token": "tok-nope-1111111", "name": "x"}]},
        expect_error=True,
    )
    assert isinstance(run.error, AuthenticationError)

"""Incremental state as a matrix: selection x user shape x tenants x run sequence.

For every cell, the sandbox's request log must show that every page of every walked
endpoint carried the `updated_after` the state calls for (the earliest bookmark of the
selected streams sharing that endpoint, minus the lookback), and the records emitted must
be exactly those the API holds for that filter: the changed ones plus the lookback overlap.
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta

import pytest
import requests

from tap_lms_unified.providers import kombo
from tap_lms_unified.sandbox import Fault, Sandbox
from tap_lms_unified.shaping import parse_utc
from tests.conftest import SANDBOX_API_KEY, TapRun, bookmark, filter_value, run_tap

LOOKBACK = timedelta(minutes=5)
TENANTS = ("sandbox:acme", "sandbox:globex")
#: Each stream's endpoint and how its rows come out of the endpoint's records.
STREAMS = {str(vars(stream)["name"]): stream for stream in kombo.STREAMS}
ENDPOINT = {name: str(vars(stream)["path"]) for name, stream in STREAMS.items()}
PAIRS = (("users", "progress"), ("courses", "course_revisions"))

SELECTIONS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in STREAMS},
    "users+progress": PAIRS[0],
    "courses+revisions": PAIRS[1],
    "users+progress+skills": (*PAIRS[0], "skills"),
    "courses+revisions+progressions": (*PAIRS[1], "course_progressions"),
    "all": tuple(STREAMS),
}


def _config(sb: Sandbox, tenants: int) -> dict[str, t.Any]:
    return {
        "provider": "kombo",
        "api_key": SANDBOX_API_KEY,
        "integrations": [{"integration_id": tenant} for tenant in TENANTS[:tenants]],
        "api_url": sb.kombo_url,
        "page_size": 4,
        "max_retries": 0,
        "max_retry_wait_seconds": 0.1,
    }


def _rows(sb: Sandbox, tenant: str, stream: str, since: str | None) -> set[str]:
    """Keys of the rows the API answers for `stream` under `updated_after = since`.

    Asked of the sandbox directly, so the tap's output is compared with what the API holds
    for exactly that filter (callers read the request log before asking).
    """
    params = {"page_size": "250", "include_deleted": "true"}
    if since is not None:
        params["updated_after"] = since
    headers = {"Authorization": f"Bearer {SANDBOX_API_KEY}", "X-Integration-Id": tenant}
    keys: set[str] = set()
    cursor = None
    while True:
        page = requests.get(
            sb.kombo_url + ENDPOINT[stream],
            params=params | ({"cursor": cursor} if cursor else {}),
            headers=headers,
            timeout=10,
        ).json()["data"]
        for record in page["results"]:
            if stream == "progress":
                keys |= {item["progress_id"] for item in record.get("progress") or ()}
            elif stream == "course_revisions":
                keys |= {revision["id"] for revision in record["revisions"]}
            else:
                keys.add(record["id"])
        cursor = page["next"]
        if not cursor:
            break
    return keys


def _emitted(run: TapRun, stream: str, tenant: str) -> list[str]:
    key = STREAMS[stream].primary_keys[0]
    return [r[key] for r in run.records(stream) if r["integration_id"] == tenant]


def _expected_filter(state: dict[str, t.Any], streams: t.Iterable[str], tenant: str) -> str | None:
    """`updated_after` for a walk feeding `streams`: the earliest bookmark minus lookback."""
    starts = []
    for stream in streams:
        value = bookmark(state, stream, tenant) if stream in state.get("bookmarks", {}) else None
        if value is None:
            return None
        starts.append(parse_utc(value) - LOOKBACK)
    return filter_value("kombo", min(starts))


def _check_run(
    sb: Sandbox, run: TapRun, selection: tuple[str, ...], state: dict[str, t.Any], tenants: int
) -> None:
    """Every page carried the expected filter; exactly the API's rows for it were emitted."""
    log = sb.requests  # the tap's requests, before the oracle's own
    for tenant in TENANTS[:tenants]:
        for path in {ENDPOINT[s] for s in selection}:
            on_path = [s for s in selection if ENDPOINT[s] == path]
            expected = _expected_filter(state, on_path, tenant)
            pages = [r for r in log if r.path == path and r.tenant == tenant]
            assert pages, f"{path} was not walked for {tenant}"
            assert {r.params.get("updated_after") for r in pages} == {expected}, (path, tenant)
            assert sum("cursor" not in r.params for r in pages) == 1, f"{path} walked twice"
            for stream in on_path:
                emitted = _emitted(run, stream, tenant)
                assert len(emitted) == len(set(emitted)), f"{stream}: duplicates"
                assert set(emitted) == _rows(sb, tenant, stream, expected), (stream, tenant)


def _bookmarks_complete(state: dict[str, t.Any], selection: tuple[str, ...], tenants: int) -> None:
    """After a complete run, every selected stream has a timestamp bookmark per tenant."""
    for stream in selection:
        for tenant in TENANTS[:tenants]:
            value = bookmark(state, stream, tenant)
            assert value is not None, f"{stream}/{tenant} has no bookmark"
            assert parse_utc(value) <= datetime.now(parse_utc(value).tzinfo)


def _mutate(sb: Sandbox, tenants: int) -> None:
    for tenant in TENANTS[:tenants]:
        sb.mutate("kombo", tenant, "users", change=2, delete=1)
        sb.mutate("kombo", tenant, "course_progressions", change=2, delete=1)
        sb.mutate("kombo", tenant, "courses", change=1)
        sb.mutate("kombo", tenant, "skills", change=1)


#: API shapes: the user shape (legacy nests progress[]) and courses with/without revisions.
SHAPES = {
    "legacy": {"kombo_legacy_users": True},
    "current": {"kombo_legacy_users": False},
    "current-norevisions": {"kombo_legacy_users": False, "kombo_course_revisions": False},
}


@pytest.mark.parametrize("tenants", [1, 2])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("selection", list(SELECTIONS), ids=list(SELECTIONS))
def test_first_and_second_run(selection: str, shape: str, tenants: int) -> None:
    streams = SELECTIONS[selection]
    with Sandbox(
        seed=11,
        kombo_users=10,
        progress_per_user=2,
        kombo_courses=5,
        kombo_skills=4,
        kombo_tenants=TENANTS,
        **SHAPES[shape],  # type: ignore[arg-type]
    ) as sb:
        config = _config(sb, tenants)
        first = run_tap(config, select=streams)
        _check_run(sb, first, streams, {}, tenants)
        _bookmarks_complete(first.final_state, streams, tenants)

        _mutate(sb, tenants)
        sb.reset_requests()
        second = run_tap(config, select=streams, state=first.final_state)
        # the filter moved: every walked endpoint was read incrementally the second time
        assert all("updated_after" in r.params for r in sb.requests)
        _check_run(sb, second, streams, first.final_state, tenants)
        _bookmarks_complete(second.final_state, streams, tenants)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("pair", PAIRS, ids=["users", "courses"])
def test_a_stream_added_to_the_selection_is_read_from_the_start(
    pair: tuple[str, str], shape: str
) -> None:
    with Sandbox(seed=5, kombo_users=8, kombo_courses=4, **SHAPES[shape]) as sb:  # type: ignore[arg-type]
        config = _config(sb, 1) | {"integrations": None, "integration_id": TENANTS[0]}
        first = run_tap(config, select=pair[:1])
        _mutate(sb, 1)
        sb.reset_requests()
        # the partner joins: the shared walk starts where the new stream needs (the start)
        second = run_tap(config, select=pair, state=first.final_state)
        _check_run(sb, second, pair, first.final_state, 1)
        sb.reset_requests()
        third = run_tap(config, select=pair, state=second.final_state)
        assert all("updated_after" in r.params for r in sb.requests)
        _check_run(sb, third, pair, second.final_state, 1)


def test_a_failed_tenant_resumes_from_its_own_bookmarks() -> None:
    streams = SELECTIONS["all"]
    with Sandbox(seed=3, kombo_users=8, kombo_courses=4, kombo_tenants=TENANTS) as sb:
        config = _config(sb, 2)
        first = run_tap(config, select=streams)
        _mutate(sb, 2)
        sb.inject(Fault(kind="status", status=500, tenant=TENANTS[1], times=None))
        second = run_tap(config, select=streams, state=first.final_state, expect_error=True)
        assert second.error is not None
        for stream in streams:  # the failed tenant kept its bookmarks, the other moved on
            assert bookmark(second.final_state, stream, TENANTS[1]) == bookmark(
                first.final_state, stream, TENANTS[1]
            )
        sb.clear_faults()
        sb.reset_requests()
        third = run_tap(config, select=streams, state=second.final_state)
        log = sb.requests
        for tenant, state in ((TENANTS[0], second.final_state), (TENANTS[1], first.final_state)):
            for path in {ENDPOINT[s] for s in streams}:
                on_path = [s for s in streams if ENDPOINT[s] == path]
                expected = _expected_filter(state, on_path, tenant)
                pages = [r for r in log if r.path == path and r.tenant == tenant]
                assert {r.params.get("updated_after") for r in pages} == {expected}
                for stream in on_path:
                    assert set(_emitted(third, stream, tenant)) == _rows(
                        sb, tenant, stream, expected
                    )

"""Resumption: the real CLI killed or stopped mid-sync, then rerun from its last STATE.

The tap runs as a subprocess (`python -m tap_lms_unified`) against the sandbox running in
this process, slowed down by `latency_ms` so that it can be stopped after N RECORD/STATE
lines of its stdout. Checked for every stop:

- the runs together emit every record (a rerun may repeat some: targets upsert by key);
- no bookmark moved past data that was not emitted: a bookmark in any STATE exists only
  for a stream whose records were all emitted before that STATE (in this or an earlier run);
- a rerun from the final state of a completed run emits only the lookback overlap.
"""

from __future__ import annotations

import signal
import threading
import time
import typing as t
from datetime import datetime, timedelta

import pytest

from tap_lms_unified.sandbox import Fault, Sandbox
from tap_lms_unified.shaping import utc_iso
from tests.conftest import (
    KOMBO_STREAMS,
    KOMBO_TENANT,
    CliRun,
    filter_value,
    kombo_config,
    primary_key,
    run_cli,
    run_tap,
)
from tests.reliability_utils import bookmark_values, emitted_ids, expected_ids, run_cli_until

#: Lookback of these runs: three months, so that the overlap of a rerun is not empty.
LOOKBACK_MINUTES = 60 * 24 * 90
#: Kill points: seconds after the tap's first output line. These runs fetch one walk at a
#: time (`max_concurrency: 1`, whose output equals the concurrent one's: test_tenants.py),
#: which spreads the streams over the run. With 40 ms per request a run spends about
#: 0-0.55 s in course_progressions, -0.65 in the course_revisions walk (its spool feeds
#: courses), -0.95 in the progress walk (its spool feeds users), then skills and users;
#: the tap writes records in chunks, flushed at each STATE.
KILL_POINTS = (0.05, 0.3, 0.6, 0.75, 0.9)


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    """Never mutated by these tests: every run sees the same data."""
    with Sandbox(
        seed=3,
        kombo_users=60,
        progress_per_user=2,
        kombo_courses=12,
        kombo_skills=10,
        latency_ms=40,
    ) as sandbox:
        yield sandbox


def config(sandbox: Sandbox, **overrides: t.Any) -> dict:
    overrides = {"max_concurrency": 1, **overrides}
    return kombo_config(
        sandbox, page_size=10, lookback_window_minutes=LOOKBACK_MINUTES, **overrides
    )


@pytest.fixture(scope="module")
def complete(sb, tmp_path_factory) -> CliRun:
    """One uninterrupted run from scratch: the reference for kill points and the overlap."""
    run = run_cli(config(sb), tmp_path_factory.mktemp("complete"))
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def check_bookmarks_follow_records(runs: list[CliRun], expected: dict[str, list[str]]) -> None:
    """A committed bookmark may only appear once all of its stream's records were emitted."""
    emitted: dict[str, set[str]] = {stream: set() for stream in expected}
    for number, run in enumerate(runs, 1):
        for position, message in enumerate(run.messages):
            if message["type"] == "RECORD" and message["stream"] in emitted:
                key = primary_key("kombo", message["stream"])
                emitted[message["stream"]].add(message["record"][key])
            elif message["type"] == "STATE":
                for stream, ids in expected.items():
                    if bookmark_values(message["value"], stream):
                        missing = set(ids) - emitted[stream]
                        assert not missing, (
                            f"run {number}, message {position}: STATE has a bookmark for "
                            f"{stream} but {len(missing)} of its records were never emitted"
                        )


def union_problems(runs: list[CliRun], expected: dict[str, list[str]]) -> dict[str, int]:
    """Per stream, how many records no run emitted."""
    out = {}
    for stream, ids in expected.items():
        got = {i for run in runs for i in emitted_ids(run.messages, stream)}
        if set(ids) - got:
            out[stream] = len(set(ids) - got)
    return out


@pytest.mark.parametrize("seconds", KILL_POINTS)
def test_sigkill_then_rerun_from_the_last_state(sb, tmp_path, seconds, capsys):
    expected = expected_ids(sb, "kombo")
    killed = run_cli_until(
        config(sb), tmp_path, lines=0, then_wait=seconds, sig=signal.SIGKILL, name="killed"
    )
    assert killed.killed_after is not None, "the tap finished before the kill point"
    assert killed.returncode == -signal.SIGKILL
    last_state = killed.states[-1] if killed.states else None
    rerun = run_cli(config(sb), tmp_path, state=last_state, name="rerun")
    assert rerun.returncode == 0, rerun.stderr[-2000:]

    missing = union_problems([killed, rerun], expected)
    during = ([m["stream"] for m in killed.messages if m["type"] == "SCHEMA"] or ["startup"])[-1]
    with capsys.disabled():
        print(
            f"\nSIGKILL {seconds} s after the first line (during {during}): "
            f"run 1 emitted {killed.count('RECORD')} records and {len(killed.states)} STATE, "
            f"resumed with bookmarks for {_bookmarked(last_state)}; run 2 emitted "
            f"{rerun.count('RECORD')} records; union complete: {not missing}"
        )
    assert not missing, missing
    check_bookmarks_follow_records([killed, rerun], expected)
    # the rerun ends like a complete run
    assert bookmarked_streams(rerun.states[-1]) == set(KOMBO_STREAMS)


def _bookmarked(state: dict | None) -> str:
    streams = sorted(bookmarked_streams(state or {}))
    return ", ".join(streams) if streams else "none"


def bookmarked_streams(state: dict) -> set[str]:
    return {s for s in KOMBO_STREAMS if bookmark_values(state, s)}


@pytest.mark.parametrize(
    ("sig", "seconds"), [(signal.SIGTERM, 0.3), (signal.SIGINT, 0.75)], ids=["SIGTERM", "SIGINT"]
)
def test_sigterm_and_sigint_end_cleanly_with_a_final_state(sb, tmp_path, sig, seconds):
    expected = expected_ids(sb, "kombo")
    stopped = run_cli_until(config(sb), tmp_path, lines=0, then_wait=seconds, sig=sig)
    assert stopped.killed_after is not None, "the tap finished before the signal"
    assert stopped.returncode == 128 + sig, stopped.stderr[-2000:]  # 143 / 130
    assert "Traceback" not in stopped.stderr
    assert stopped.messages[-1]["type"] == "STATE"
    check_bookmarks_follow_records([stopped], expected)
    # its final state is a good place to resume from
    rerun = run_cli(config(sb), tmp_path, state=stopped.messages[-1]["value"], name="rerun")
    assert rerun.returncode == 0
    assert not union_problems([stopped, rerun], expected)
    check_bookmarks_follow_records([stopped, rerun], expected)


def test_rerun_of_a_completed_run_emits_only_the_lookback_overlap(sb, complete, tmp_path):
    state = complete.states[-1]
    assert bookmarked_streams(state) == set(KOMBO_STREAMS)
    sb.reset_requests()
    rerun = run_cli(config(sb), tmp_path, state=state)
    assert rerun.returncode == 0

    def start(stream: str) -> str:
        (bookmark,) = bookmark_values(state, stream)
        moment = datetime.fromisoformat(bookmark.replace("Z", "+00:00"))
        return filter_value("kombo", moment - timedelta(minutes=LOOKBACK_MINUTES))

    # one walk per pair, from the earlier start of the two
    walks = {
        "/lms/users": min(start("users"), start("progress")),
        "/lms/course-progressions": start("course_progressions"),
        "/lms/courses": min(start("courses"), start("course_revisions")),
        "/lms/skills": start("skills"),
    }
    for path, updated_after in walks.items():
        sent = {r.params.get("updated_after") for r in sb.requests if r.path == path}
        assert sent == {updated_after}, path

    def since(records: list[dict], path: str) -> list[dict]:
        threshold = utc_iso(walks[path])
        return [r for r in records if (utc_iso(r["changed_at"]) or "") >= (threshold or "")]

    users = since(sb.records("kombo", KOMBO_TENANT, "users"), "/lms/users")
    courses = since(sb.records("kombo", KOMBO_TENANT, "courses"), "/lms/courses")
    overlap = {
        "users": [u["id"] for u in users],
        "progress": [p["progress_id"] for u in users for p in u["progress"]],
        "course_progressions": [
            r["id"]
            for r in since(
                sb.records("kombo", KOMBO_TENANT, "course_progressions"),
                "/lms/course-progressions",
            )
        ],
        "courses": [c["id"] for c in courses],
        "course_revisions": [r["id"] for c in courses for r in c["revisions"]],
        "skills": [
            s["id"] for s in since(sb.records("kombo", KOMBO_TENANT, "skills"), "/lms/skills")
        ],
    }
    full = expected_ids(sb, "kombo")
    for stream in KOMBO_STREAMS:
        got = emitted_ids(rerun.messages, stream)
        assert sorted(got) == sorted(overlap[stream]), stream
        assert 0 < len(got) < len(full[stream]), (stream, len(got))
    # and the bookmarks did not move: nothing newer exists
    assert rerun.states[-1]["bookmarks"] == state["bookmarks"]


# ------------------------------------------------------------------ changes during a walk


def _mutate_during_the_walk(sandbox: Sandbox, fetched_pages: int, page_size: int) -> dict:
    """Once `fetched_pages` pages of /lms/users were served, change a user on one of them
    (A), then, later, a user on a page not fetched yet (B)."""
    deadline = time.monotonic() + 10
    while sum(1 for r in sandbox.requests if r.path == "/lms/users") < fetched_pages:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    order = [u["id"] for u in sandbox.records("kombo", KOMBO_TENANT, "users")]
    fetched = set(order[: fetched_pages * page_size])
    found: dict[str, str] = {}
    for _ in range(200):
        (user,) = sandbox.mutate("kombo", KOMBO_TENANT, "users", change=1)["changed"]
        if "a" not in found and user in fetched:
            found["a"] = user
            time.sleep(0.01)
        elif "a" in found and user not in fetched:
            found["b"] = user
            return found
    raise AssertionError("no suitable users to change")


def test_change_during_a_shared_walk_is_fetched_by_the_next_run() -> None:
    """No bookmark passes a change made while the run was under way, even without lookback.

    The users rows come from the progress stream's walk, synced before users; a user on an
    already-fetched page changes (A), then one on a later page (B): the users bookmark must
    stay at or before A's change although B's newer changed_at was emitted.
    """
    with Sandbox(seed=9, kombo_users=60, progress_per_user=1, kombo_courses=2) as sandbox:
        # the 4th page waits 1 s: meanwhile pages 1-3 have been fetched and data changes
        sandbox.inject(
            Fault(kind="delay", seconds=1.0, provider="kombo", path="/lms/users", after=3)
        )
        changes: dict[str, str] = {}
        mutator = threading.Thread(
            target=lambda: changes.update(_mutate_during_the_walk(sandbox, 3, 10))
        )
        mutator.start()
        settings = kombo_config(sandbox, page_size=10, lookback_window_minutes=0)
        first = run_tap(settings, select={"users", "progress"})
        mutator.join()
        assert changes.keys() == {"a", "b"}
        stored = {u["id"]: u for u in sandbox.records("kombo", KOMBO_TENANT, "users")}
        a_changed_at = utc_iso(stored[changes["a"]]["changed_at"])
        # B was emitted with its new changed_at, A with its old one
        emitted = {u["id"]: u for u in first.records("users")}
        assert emitted[changes["b"]]["changed_at"] == utc_iso(stored[changes["b"]]["changed_at"])
        assert emitted[changes["a"]]["changed_at"] != a_changed_at
        # the next run, of users alone, must fetch A's change again
        second = run_tap(settings, select={"users"}, state=first.final_state)
        assert changes["a"] in {u["id"] for u in second.records("users")}, (
            f"users bookmark {bookmark_values(first.final_state, 'users')} passed A's change "
            f"at {a_changed_at}, made while the walk was under way"
        )

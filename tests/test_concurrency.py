"""Every walk of a run fetched at once: the output is still exactly the sequential one.

The tap starts the walks of every selected stream for every tenant when the first stream
starts (walking.py). These tests compare, message for message, a run with the default
concurrency against a run with `max_concurrency: 1` for every shape of run: one tenant or
many, every stream or paired streams alone, tenants failing on their first request or in
the middle of a later stream, fail_fast, walks paused far ahead of their reader. They also
check the budgets shared by a tenant's concurrent walks and Bindbee's page size. No test
measures time: scripts/benchmark does.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import typing as t

import pytest

from tap_lms_unified.errors import BadDataError, TenantsFailedError
from tap_lms_unified.sandbox import Fault, Sandbox
from tap_lms_unified.tap import TapLmsUnified
from tap_lms_unified.walking import MEMORY, MemoryBudget, PageBuffer
from tests.conftest import (
    TapRun,
    bindbee_config,
    bindbee_tenants_config,
    kombo_config,
    kombo_tenants_config,
    run_tap,
)
from tests.hostile import HostileServer, by_header, kombo_progress, kombo_user, paged
from tests.hostile import catalog as hostile_catalog
from tests.hostile import config as hostile_config
from tests.test_tenants import KOMBO_TENANTS, TOKENS, comparable


@pytest.fixture(scope="module")
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(
        seed=11,
        kombo_users=40,
        progress_per_user=2,
        kombo_courses=9,
        kombo_skills=7,
        kombo_tenants=KOMBO_TENANTS,
        bindbee_users=30,
        bindbee_courses=6,
        bindbee_tokens=TOKENS,
        latency_ms=3,
    ) as sandbox:
        yield sandbox


def kombo(sb: Sandbox, tenants: t.Sequence[str] = KOMBO_TENANTS, **extra: t.Any) -> dict:
    defaults: dict[str, t.Any] = {"page_size": 7, "max_retry_wait_seconds": 0.2, "max_retries": 1}
    return kombo_tenants_config(sb, tenants, **(defaults | extra))


def bindbee(sb: Sandbox, **extra: t.Any) -> dict:
    defaults: dict[str, t.Any] = {"page_size": 8, "max_retry_wait_seconds": 0.2, "max_retries": 1}
    return bindbee_tenants_config(sb, TOKENS, **(defaults | extra))


def both_ways(
    sb: Sandbox,
    config: dict,
    *,
    faults: t.Sequence[Fault] = (),
    select: t.Iterable[str] | None = None,
    prepare: t.Callable[[t.Any], None] | None = None,
) -> tuple[TapRun, TapRun]:
    """The run with max_concurrency 1, then with 8, each against the same faults."""
    runs = []
    for concurrency in (1, 8):
        sb.clear_faults()
        for fault in faults:
            sb.inject(Fault(**{**fault.__dict__, "seen": 0, "applied": 0}))
        runs.append(
            run_tap(
                {**config, "max_concurrency": concurrency},
                select=select,
                prepare=prepare,
                expect_error=True,
            )
        )
    sb.clear_faults()
    return runs[0], runs[1]


def assert_same(sequential: TapRun, concurrent: TapRun) -> None:
    assert comparable(concurrent) == comparable(sequential)
    assert type(concurrent.error) is type(sequential.error)
    assert _no_log_ids(concurrent.error) == _no_log_ids(sequential.error)


def _no_log_ids(error: BaseException | None) -> str:
    """An error's text without the sandbox's random Kombo log ids."""
    return re.sub(r"logs\?id=\w+", "logs?id=…", str(error))


KOMBO_SELECTIONS = [
    None,  # every stream
    {"users", "progress"},
    {"progress"},
    {"users"},
    {"courses", "course_revisions", "skills"},
    {"course_revisions"},
]


@pytest.mark.parametrize("select", KOMBO_SELECTIONS, ids=lambda s: "+".join(sorted(s or {"all"})))
def test_kombo_selections(sb, select):
    sequential, concurrent = both_ways(sb, kombo(sb), select=select)
    assert sequential.error is None
    assert sequential.by_type["RECORD"] > 0
    assert_same(sequential, concurrent)


def test_kombo_one_tenant_every_stream(sb):
    sequential, concurrent = both_ways(sb, kombo(sb, tenants=KOMBO_TENANTS[:1]))
    assert sequential.error is None
    assert_same(sequential, concurrent)


KOMBO_FAILURES = {
    # refused on its first request: every stream of that tenant is skipped
    "not-ready": [Fault("status", provider="kombo", tenant="sandbox:globex", status=409)],
    # fails in the middle of a later stream's walk (its earlier streams were complete)
    "mid-users": [
        Fault(
            "status",
            provider="kombo",
            path="/lms/users",
            tenant="sandbox:acme",
            status=401,
            after=2,
            times=None,
        )
    ],
    # retries run out in the middle of the shared courses walk (its partner gets nothing)
    "mid-courses": [
        Fault(
            "status",
            provider="kombo",
            path="/lms/courses",
            tenant="sandbox:initech",
            status=503,
            after=1,
            times=None,
        )
    ],
    # two tenants failing, in different streams
    "two": [
        Fault(
            "status",
            provider="kombo",
            path="/lms/skills",
            tenant="sandbox:acme",
            status=403,
            times=None,
        ),
        Fault(
            "status",
            provider="kombo",
            path="/lms/course-progressions",
            tenant="sandbox:initech",
            status=401,
            after=3,
            times=None,
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(KOMBO_FAILURES))
@pytest.mark.parametrize("select", [None, {"users", "progress"}], ids=["all", "users+progress"])
def test_kombo_failed_tenants(sb, name, select):
    sequential, concurrent = both_ways(sb, kombo(sb), faults=KOMBO_FAILURES[name], select=select)
    if select is None or name in ("not-ready", "mid-users"):  # the faults hit the selection
        assert sequential.error is not None
    assert_same(sequential, concurrent)


def test_kombo_fail_fast_mid_walk(sb):
    faults = [
        Fault(
            "status",
            provider="kombo",
            path="/lms/users",
            tenant="sandbox:globex",
            status=401,
            after=1,
            times=None,
        )
    ]
    sequential, concurrent = both_ways(sb, kombo(sb, fail_fast=True), faults=faults)
    assert sequential.error is not None
    assert_same(sequential, concurrent)


def test_kombo_incremental_rerun(sb):
    first = run_tap(kombo(sb))
    sb.mutate("kombo", "sandbox:acme", "users", change=3)
    sb.mutate("kombo", "sandbox:globex", "courses", change=2)
    # The first rerun may still see the changes as newer than its own start (the bookmark
    # cap): compare the two runs after it.
    run_tap(kombo(sb), state=first.final_state)
    # The first rerun may still see the changes as newer than its own start (the bookmark
    # cap): compare the two runs after it.
    run_tap(kombo(sb), state=first.final_state)
    runs = []
    for concurrency in (1, 8):
        runs.append(run_tap({**kombo(sb), "max_concurrency": concurrency}, state=first.final_state))
    assert_same(*runs)
    assert 0 < runs[0].by_type["RECORD"] < first.by_type["RECORD"]


def test_bindbee_every_stream_and_a_failing_connector(sb):
    config = bindbee(sb)
    config["integrations"].append({"connector_token": "tok-revoked-5555555", "name": "revoked"})
    sequential, concurrent = both_ways(sb, config)
    assert "1 of 3 tenants failed" in str(sequential.error)
    assert_same(sequential, concurrent)


def test_bindbee_failing_mid_stream(sb):
    faults = [
        Fault(
            "status",
            provider="bindbee",
            path="/enrollments",
            tenant="globex",
            status=403,
            after=2,
            times=None,
        )
    ]
    sequential, concurrent = both_ways(sb, bindbee(sb), faults=faults)
    assert sequential.error is not None
    assert_same(sequential, concurrent)


def test_walks_far_ahead_of_their_reader_pause(sb):
    """A backlog of one byte: every walk pauses after each page, giving up its slot."""

    def tiny_backlog(tap: t.Any) -> None:
        tap.run.pool.max_backlog = 1

    sequential, concurrent = both_ways(
        sb, {**kombo(sb), "max_concurrency": 2}, prepare=tiny_backlog
    )
    assert sequential.error is None
    assert_same(sequential, concurrent)
    faults = KOMBO_FAILURES["two"]
    sequential, concurrent = both_ways(sb, bindbee(sb), faults=(), prepare=tiny_backlog)
    assert_same(sequential, concurrent)
    sequential, concurrent = both_ways(sb, kombo(sb), faults=faults, prepare=tiny_backlog)
    assert_same(sequential, concurrent)


@pytest.mark.parametrize("memory", [0, 3_000, 40_000])
def test_pages_waiting_in_memory_or_on_disk_give_the_same_output(sb, memory):
    """The run's memory budget for waiting pages: none (all on disk), less than a page,
    a page or so (pages alternate between memory and disk)."""

    def budget(tap: t.Any) -> None:
        tap.run.pool.memory = MemoryBudget(memory)

    sequential, concurrent = both_ways(sb, kombo(sb), prepare=budget)
    assert sequential.error is None
    assert_same(sequential, concurrent)


def test_pages_keep_their_order_between_memory_and_disk():
    """A page waits in memory only when none waits on disk; what was taken is given back."""
    budget = MemoryBudget(10)
    buffer = PageBuffer(budget)
    reader = buffer.pages()
    pages = [bytes([i]) * size for i, size in enumerate([4, 4, 4, 1, 8, 2, 2, 20, 3, 1])]
    for page in pages[:4]:  # 4 and 4 in memory; 4 does not fit: disk, and so 1 after it
        buffer.put(page)
    got = [next(reader), next(reader)]
    for page in pages[4:7]:  # memory is free again, yet a page waits on disk
        buffer.put(page)
    got += [next(reader) for _ in range(5)]
    for page in pages[7:]:  # 20 is beyond the budget: disk, and so what follows
        buffer.put(page)
    got.append(next(reader))
    buffer.finish()
    got += list(reader)
    assert got == pages
    assert budget.take(10)  # all of it given back
    unread = PageBuffer(budget := MemoryBudget(10))
    unread.put(b"12345")
    unread.close()  # a cancelled walk gives its pages' memory back
    assert budget.take(10)


def test_a_failed_tenant_lets_go_of_its_pages():
    """A tenant failing on a paired stream stops its walk and gives its pages' memory back:
    the traceback its error keeps must not hold the walk's reader open."""
    api = HostileServer("api").start()
    try:
        wide = "x" * 2000
        bad = [[kombo_user("bad-0", progress=kombo_progress("p-0"))]]  # progress: no array
        bad += [[kombo_user(f"b{p}-{i}", first_name=wide) for i in range(100)] for p in range(30)]
        ok = [[kombo_user(f"ok-{i}") for i in range(3)]]
        tenants = {"acme:bad": paged("kombo", bad), "acme:ok": paged("kombo", ok)}
        api.route("/v1/lms/users", by_header("x-integration-id", tenants))
        settings = hostile_config("kombo", api.url)
        del settings["integration_id"]
        settings["integrations"] = [{"integration_id": key} for key in tenants]
        tap = TapLmsUnified(
            config=settings, state={}, catalog=hostile_catalog("kombo", ["users", "progress"])
        )
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(TenantsFailedError):
            tap.sync_all()
        assert tap.run.pool.memory.take(MEMORY), "pages of the failed walk still held"
        tap.run.sender.close()  # its kept-alive connections: the server's stop joins them
    finally:
        api.stop()


def test_a_sync_off_the_main_thread_writes_every_record(sandbox):
    """The SDK lets a tap sync in any thread: its held RECORD lines go out from there."""
    in_main = run_tap(kombo_config(sandbox))
    result: dict[str, TapRun] = {}
    worker = threading.Thread(target=lambda: result.update(run=run_tap(kombo_config(sandbox))))
    worker.start()
    worker.join(120)
    assert in_main.records("users")
    assert comparable(result["run"]) == comparable(in_main)


def test_a_refused_tenant_costs_one_request(sb):
    sb.reset_requests()
    config = bindbee(sb)
    config["integrations"].append({"connector_token": "tok-revoked-5555555", "name": "revoked"})
    run = run_tap(config, expect_error=True)
    assert "revoked" in str(run.error)
    assert sum(1 for r in sb.requests if r.status == 401) == 1


# -- budgets shared by a tenant's concurrent walks ----------------------------------------


def test_kombo_rate_limit_headers_across_concurrent_walks():
    """Kombo's ratelimit-remaining/-reset, honoured by four walks of one integration."""
    with Sandbox(
        seed=2,
        kombo_users=40,
        progress_per_user=2,
        kombo_courses=9,
        kombo_skills=7,
        kombo_budget_per_minute=6,
        kombo_budget_window_s=1,
    ) as sandbox:
        run = run_tap(kombo_config(sandbox, page_size=10))
        log = sandbox.requests
    assert len(log) > 12  # a few windows' worth, four endpoints walked at once
    assert [r for r in log if r.status == 429] == []
    assert len(run.records("users")) == 40
    assert len(run.records("course_progressions")) == 80


def test_bindbee_budget_is_shared_by_a_tokens_streams():
    window = 1.5
    with Sandbox(
        seed=4,
        bindbee_users=40,
        bindbee_courses=6,
        bindbee_tokens=TOKENS,
        bindbee_budget_per_minute=8,
        bindbee_budget_window_s=window,
    ) as sandbox:

        def short_window(tap: t.Any) -> None:
            for tenant in tap.run.tenants.values():
                tenant.budget.window = window

        run = run_tap(
            bindbee(sandbox, page_size=10, max_requests_per_minute=8), prepare=short_window
        )
        log = [r for r in sandbox.requests if r.path.startswith("/api/lms/v1/")]
    assert run.error is None
    assert [r for r in log if r.status == 429] == []
    for name in TOKENS.values():
        paths = {r.path for r in log if r.tenant == name}
        assert len(paths) == 7


# -- Bindbee's page size ------------------------------------------------------------------


def test_bindbee_asks_for_200_and_steps_down_once_on_a_422(sandbox):
    sandbox.set_option(bindbee_max_page_size=100)
    config = bindbee_config(sandbox)
    del config["page_size"]
    run = run_tap(config)
    sizes = [r.params.get("page_size") for r in sandbox.requests]
    assert sizes[0] == "200"
    assert sizes.count("200") == 1  # refused once, remembered for the run
    assert set(sizes[1:]) == {"100"}
    assert [r.status for r in sandbox.requests].count(422) == 1
    assert run.log.count("refused page_size 200: using 100") == 1
    assert len(run.records("users")) == 40


def test_bindbee_uses_200_where_the_api_accepts_it(sandbox):
    config = bindbee_config(sandbox)
    del config["page_size"]
    run = run_tap(config)
    assert {r.params.get("page_size") for r in sandbox.requests} == {"200"}
    assert len(run.records("users")) == 40


def test_a_422_on_the_smaller_size_still_fails_the_tenant(sandbox):
    sandbox.set_option(bindbee_max_page_size=50)
    config = bindbee_config(sandbox)
    del config["page_size"]
    run = run_tap(config, expect_error=True)
    assert "page_size" in str(run.error)
    assert "HTTP 422" in str(run.error)


# -- the direct RECORD path ---------------------------------------------------------------


@pytest.mark.parametrize("provider", ["kombo", "bindbee"])
def test_direct_records_are_the_sdks_records(sandbox, provider):
    """RECORDs written without the SDK's per-record passes equal those written with them."""

    def sdk_path(tap: t.Any) -> None:
        for stream in tap.streams.values():
            stream.__dict__["_plain_writer"] = None  # the cached property, forced off

    config = kombo_config(sandbox) if provider == "kombo" else bindbee_config(sandbox)
    direct, sdk = run_tap(config), run_tap(config, prepare=sdk_path)

    def without_time(run: TapRun) -> list[dict]:
        # The table version is the run's start in seconds: two runs may straddle a second.
        volatile = ("time_extracted", "version")
        return [{k: v for k, v in m.items() if k not in volatile} for m in run.messages]

    def versions(run: TapRun) -> set[int]:
        return {m["version"] for m in run.messages if m["type"] == "RECORD" and "version" in m}

    assert comparable(direct) == comparable(sdk)
    assert without_time(direct) == without_time(sdk)  # every value
    assert [list(m) for m in direct.messages] == [list(m) for m in sdk.messages]  # key order
    assert len(versions(direct)) == len(versions(sdk)) == (provider == "bindbee")
    assert all("time_extracted" in m for m in direct.messages if m["type"] == "RECORD")


def test_post_process_is_honoured_on_the_direct_path(sandbox):
    """The SDK's public per-record hook: a record it changes or drops is emitted so."""

    def keep_every_other(record: dict, context: dict | None) -> dict | None:
        assert context is not None
        if record["id"] < "M":
            return None
        return {**record, "first_name": "X"}

    def prepare(tap: t.Any) -> None:
        tap.streams["users"].post_process = keep_every_other

    full = run_tap(kombo_config(sandbox)).records("users")
    run = run_tap(kombo_config(sandbox), prepare=prepare)
    expected = [r["id"] for r in full if r["id"] >= "M"]
    assert 0 < len(expected) < len(full)
    assert [r["id"] for r in run.records("users")] == expected
    assert {r["first_name"] for r in run.records("users")} == {"X"}


def test_records_the_walk_skips_over_are_read_by_the_reader(sandbox):
    """The walk checks the envelope and skips over records; the reader reads them, JSON
    that msgspec refuses included (a number beyond a double: a key that is no string)."""
    body = '{"cursor": null, "page_size": 1, "items": [{"id": 1e999999}]}'
    sandbox.inject(Fault("status", provider="bindbee", path="/users", status=200, body=body))
    run = run_tap(bindbee_config(sandbox), expect_error=True)
    assert "records without a usable primary key were not emitted (acme users=1)" in str(run.error)


def test_a_page_whose_records_are_no_json_ends_its_tenant(sandbox):
    """What the walk's envelope check lets through and is no JSON (invalid UTF-8)."""
    tap = TapLmsUnified(config=bindbee_config(sandbox))
    stream = tap.streams["users"]
    assert stream.records_of(b'{"cursor": null, "items": [{"id": "a"}]}') == [{"id": "a"}]
    with pytest.raises(BadDataError, match="returned a page whose records are not valid JSON"):
        stream.records_of(b'{"cursor": null, "items": [{"id": "a\xff"}]}')

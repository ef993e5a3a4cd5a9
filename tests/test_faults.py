"""Fault matrix against the sandbox's fault injection, for both providers.

Retryable faults (429s, 5xx bursts, broken connections, timeouts, bodies that are not
JSON) must end with exactly the sandbox's record set; non-retryable ones (a pagination
loop, a body that is not the envelope, retries exhausted) must fail fast, name the
endpoint, and make the CLI exit non-zero. A seeded soak test sprinkles ~10% retryable
faults over a multi-page, multi-stream sync of both providers.
"""

from __future__ import annotations

import random
import time
import typing as t
from collections import Counter
from dataclasses import dataclass

import pytest

from tap_lms_unified.errors import PaginationLoopError
from tap_lms_unified.providers import PROVIDERS as REGISTRY
from tap_lms_unified.sandbox import Fault, Sandbox
from tests.conftest import bindbee_config, kombo_config, run_cli, run_tap
from tests.reliability_utils import (
    assert_exact_records,
    bookmark_values,
    expected_ids,
    record_set_diff,
)

PROVIDERS = tuple(REGISTRY)
#: The path every matrix fault hits, and the streams synced (the path is walked by the
#: first of them; Kombo's users and progress share that walk).
TARGET = {"kombo": "/lms/users", "bindbee": "/api/lms/v1/users"}
ENDPOINT = {p: f"GET {path}" for p, path in TARGET.items()}
SELECTED = {"kombo": ("users", "progress", "skills"), "bindbee": ("users", "skills")}
#: Faults hit the second page (`after=1`): the retry has to resend a real cursor.
PAGE_2 = 1


@pytest.fixture
def sb() -> t.Iterator[Sandbox]:
    """30 users in pages of 10 for both providers: three pages per walk."""
    with Sandbox(
        seed=11,
        kombo_users=30,
        progress_per_user=2,
        kombo_courses=4,
        kombo_skills=6,
        bindbee_users=30,
        bindbee_courses=4,
    ) as sandbox:
        yield sandbox


def config_for(sb: Sandbox, provider: str, **overrides: t.Any) -> dict:
    settings = {
        "page_size": 10,
        # Generous: on a loaded machine a normal page must never time out (an unplanned
        # retry would break the exact counts); timeout cases set their own, short one.
        "request_timeout": 5,
        "max_retry_wait_seconds": 0.5,
        **overrides,
    }
    if provider == "kombo":
        return kombo_config(sb, **settings)
    return bindbee_config(sb, **settings)


def error_body(provider: str, status: int, code: str | None = None) -> dict:
    """The provider's own error shape, without any rate-limit headers."""
    if provider == "kombo":
        return {
            "status": "error",
            "error": {
                "code": code or "PLATFORM.RATE_LIMIT_EXCEEDED",
                "title": "Sandbox says no",
                "message": f"HTTP {status} from the fault matrix.",
                "log_url": "https://app.kombo.dev/logs?id=matrix",
            },
        }
    return {"detail": f"HTTP {status} from the fault matrix"}


def reset_headers(provider: str, seconds: int) -> dict[str, str]:
    """429 headers without Retry-After: Kombo's seconds, Bindbee's Unix time."""
    if provider == "kombo":
        return {
            "ratelimit-limit": "100",
            "ratelimit-remaining": "0",
            "ratelimit-reset": str(seconds),
        }
    return {
        "X-RateLimit-Limit": "200",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(time.time()) + seconds),
    }


@dataclass
class Scenario:
    name: str
    #: Fault keyword sets (or provider -> them), hitting consecutive requests
    faults: t.Callable[[str], list[dict]] | list[dict]
    providers: tuple[str, ...] = PROVIDERS
    settings: t.Mapping[str, t.Any] | None = None
    #: the retry of a faulted request came at least this long after it (header-driven)
    min_gap: float = 0.0


RETRYABLE = [
    Scenario(
        "429-retry-after",
        lambda p: [
            {
                "kind": "status",
                "status": 429,
                "headers": {"Retry-After": "1"},
                "body": error_body(p, 429),
            }
        ],
        settings={"max_retry_wait_seconds": 2},
        min_gap=1.0,
    ),
    Scenario(
        # Without Retry-After: Kombo `ratelimit-reset` (seconds), Bindbee
        # `X-RateLimit-Reset` (Unix time) 2-3 s ahead. A wait of about 2 s or more, not the
        # no-header fallback of 1 s, shows that the header was read.
        "429-reset-headers-only",
        lambda p: [
            {
                "kind": "status",
                "status": 429,
                "headers": reset_headers(p, 2 if p == "kombo" else 3),
                "body": error_body(p, 429),
            }
        ],
        settings={"max_retry_wait_seconds": 3},
        min_gap=1.9,
    ),
    Scenario(
        "kombo-429-concurrency-limit",
        lambda p: [
            {
                "kind": "status",
                "status": 429,
                "body": error_body(p, 429, "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED"),
            },
            {"kind": "status", "status": 429, "code": "PLATFORM.CONCURRENCY_LIMIT_EXCEEDED"},
        ],
        providers=("kombo",),
    ),
    Scenario(
        "5xx-burst-500-502-503",
        [{"kind": "status", "status": s} for s in (500, 502, 503)],
    ),
    Scenario("connection-reset-mid-body", [{"kind": "reset"}]),
    Scenario(
        "read-timeout", [{"kind": "delay", "seconds": 2.0}], settings={"request_timeout": 0.5}
    ),
    Scenario("truncated-json", [{"kind": "truncate"}]),
    Scenario("html-error-page-200", [{"kind": "html200"}]),
]
CASES = [
    pytest.param(s, p, id=f"{p}-{s.name}") for s in RETRYABLE for p in PROVIDERS if p in s.providers
]


def inject_consecutive(sb: Sandbox, provider: str, specs: list[dict], first: int) -> list[Fault]:
    """Faults hitting consecutive requests of the target path from request `first` on."""
    return [
        sb.inject(Fault(provider=provider, path=TARGET[provider], after=first + i, **spec))
        for i, spec in enumerate(specs)
    ]


def settled_log(sb: Sandbox, path: str, faulted: int, timeout: float = 5) -> list:
    """The sandbox's log of a path once it holds `faulted` faulted requests.

    A delayed request is logged when the sandbox answers it, after the tap gave up on it.
    """
    deadline = time.monotonic() + timeout
    while True:
        log = [r for r in sb.requests if r.path == path]
        if sum(1 for r in log if r.fault) >= faulted or time.monotonic() > deadline:
            assert sum(1 for r in log if r.fault) == faulted
            return sorted(log, key=lambda r: r.time)
        time.sleep(0.05)


@pytest.mark.parametrize(("scenario", "provider"), CASES)
def test_retryable_fault_ends_with_the_exact_record_set(sb, scenario, provider):
    specs = scenario.faults(provider) if callable(scenario.faults) else scenario.faults
    faults = inject_consecutive(sb, provider, specs, PAGE_2)
    run = run_tap(config_for(sb, provider, **(scenario.settings or {})), select=SELECTED[provider])
    assert_exact_records(run.messages, expected_ids(sb, provider, SELECTED[provider]))
    assert [f.applied for f in faults] == [1] * len(faults)
    log = settled_log(sb, TARGET[provider], len(faults))
    faulted = [r for r in log if r.fault]
    # every faulted page was asked for again, with the same cursor
    cursors = Counter(r.params.get("cursor") for r in log)
    assert all(cursors[r.params.get("cursor")] >= 2 for r in faulted)
    assert all(r.params.get("cursor") for r in faulted), "the fault was meant for page 2"
    if scenario.min_gap:
        retry = next(r for r in log if r.time > faulted[-1].time)
        gap = retry.time - faulted[-1].time
        assert gap >= scenario.min_gap, f"retried after {gap:.2f} s"
    assert f"retrying {ENDPOINT[provider]}" in run.log


# ------------------------------------------------------------------ non-retryable


@pytest.mark.parametrize("provider", PROVIDERS)
def test_repeated_cursor_stops_at_once_with_a_pagination_loop_error(sb, provider):
    sb.inject(Fault(kind="repeat_cursor", provider=provider, path=TARGET[provider], after=PAGE_2))
    run = run_tap(config_for(sb, provider), select=SELECTED[provider], expect_error=True)
    assert isinstance(run.error, PaginationLoopError)
    message = str(run.error)
    assert ENDPOINT[provider] in message
    assert "pagination loop" in message
    # the repeated page was not fetched again (no retry, no loop)
    assert sum(1 for r in sb.requests if r.path == TARGET[provider]) == 2
    # the failed walk moved no bookmark
    for stream in SELECTED[provider]:
        if stream != "skills":
            assert bookmark_values(run.final_state, stream) == [], stream


@pytest.mark.parametrize("provider", PROVIDERS)
def test_body_that_is_not_the_envelope_fails_without_retrying(sb, provider):
    sb.inject(Fault(kind="bad_envelope", provider=provider, path=TARGET[provider]))
    run = run_tap(config_for(sb, provider), select=SELECTED[provider], expect_error=True)
    assert run.error is not None
    message = str(run.error)
    label = "Kombo" if provider == "kombo" else "Bindbee"
    assert ENDPOINT[provider] in message
    assert f"not the {label} envelope" in message
    assert sum(1 for r in sb.requests if r.path == TARGET[provider]) == 1
    assert not run.records("users")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_exhausted_retries_name_the_endpoint_and_the_last_status(sb, provider):
    for after, status in enumerate((500, 502)):
        sb.inject(
            Fault(
                kind="status", status=status, provider=provider, path=TARGET[provider], after=after
            )
        )
    sb.inject(
        Fault(
            kind="status", status=503, provider=provider, path=TARGET[provider], after=2, times=None
        )
    )
    run = run_tap(
        config_for(sb, provider, max_retries=2), select=SELECTED[provider], expect_error=True
    )
    message = str(run.error)
    assert ENDPOINT[provider] in message
    assert "HTTP 503" in message
    assert [r.status for r in sb.requests if r.path == TARGET[provider]] == [500, 502, 503]


@pytest.mark.parametrize(
    ("provider", "kind"),
    [("kombo", "delay"), ("bindbee", "reset")],
)
def test_exhausted_retries_of_transport_errors_name_the_endpoint(sb, provider, kind):
    """Timeouts and resets until retries run out: the error names the endpoint, not only
    requests' own text (host and port)."""
    sb.inject(Fault(kind=kind, seconds=2.0, provider=provider, path=TARGET[provider], times=None))
    run = run_tap(
        config_for(sb, provider, max_retries=1, request_timeout=0.5),
        select=SELECTED[provider],
        expect_error=True,
    )
    assert run.error is not None
    assert ENDPOINT[provider] in str(run.error)


@pytest.mark.parametrize(
    ("provider", "fault", "words"),
    [
        ("kombo", {"kind": "status", "status": 503, "times": None}, ["HTTP 503"]),
        ("bindbee", {"kind": "repeat_cursor", "after": PAGE_2}, ["pagination loop"]),
    ],
)
def test_cli_exits_non_zero_with_a_clear_message(sb, tmp_path, provider, fault, words):
    sb.inject(Fault(provider=provider, path=TARGET[provider], **fault))
    result = run_cli(config_for(sb, provider, max_retries=1), tmp_path)
    assert result.returncode != 0
    for word in [ENDPOINT[provider], *words]:
        assert word in result.stderr, word
    # whatever was emitted is well-formed Singer output
    assert all(
        m["type"] in {"SCHEMA", "RECORD", "STATE", "ACTIVATE_VERSION"} for m in result.messages
    )


# ------------------------------------------------------------------ hostile headers


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_as_http_date_is_honoured(sb, provider):
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
    inject_consecutive(
        sb,
        provider,
        [
            {
                "kind": "status",
                "status": 429,
                "headers": {"Retry-After": when},
                "body": error_body(provider, 429),
            }
        ],
        0,
    )
    run = run_tap(config_for(sb, provider), select={"skills"} if provider == "kombo" else {"users"})
    assert run.error is None


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("value", ["soon", "-1"])
def test_malformed_retry_after_is_still_retried(sb, provider, value):
    """A Retry-After that is neither seconds nor an HTTP date is ignored, not a crash."""
    inject_consecutive(
        sb,
        provider,
        [
            {
                "kind": "status",
                "status": 429,
                "headers": {"Retry-After": value},
                "body": error_body(provider, 429),
            }
        ],
        PAGE_2,
    )
    run = run_tap(config_for(sb, provider), select=SELECTED[provider], expect_error=True)
    assert run.error is None, repr(run.error)
    assert_exact_records(run.messages, expected_ids(sb, provider, SELECTED[provider]))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_retry_wait_caps_the_wait_after_a_429(sb, provider):
    """A reset 3 s ahead (remaining 0) waits max_retry_wait_seconds, not 3 s."""
    sb.inject(
        Fault(
            kind="status",
            status=429,
            provider=provider,
            path=TARGET[provider],
            headers=reset_headers(provider, 3),
            body=error_body(provider, 429),
        )
    )
    run_tap(config_for(sb, provider, max_retry_wait_seconds=0.5), select={"users"})
    log = [r for r in sb.requests if r.path == TARGET[provider]]
    gap = log[1].time - log[0].time
    assert gap < 1.5, f"waited {gap:.1f} s with max_retry_wait_seconds=0.5"


# ------------------------------------------------------------------ soak

SOAK_KINDS: list[dict] = [
    {"kind": "status", "status": 429, "headers": {"Retry-After": "1"}},
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 502},
    {"kind": "status", "status": 503},
    {"kind": "reset"},
    {"kind": "delay", "seconds": 4.0},
    {"kind": "truncate"},
    {"kind": "html200"},
]
SOAK_SEED = 20261122
SOAK_SHARE = 0.10


def test_soak_random_faults_on_a_tenth_of_the_requests(capsys: pytest.CaptureFixture) -> None:
    rng = random.Random(SOAK_SEED)
    with Sandbox(
        seed=5,
        kombo_users=60,
        progress_per_user=2,
        kombo_courses=12,
        kombo_skills=8,
        bindbee_users=40,
        bindbee_courses=10,
    ) as sb:
        configs = {
            "kombo": kombo_config(sb, page_size=3, request_timeout=2, max_retry_wait_seconds=0.3),
            "bindbee": bindbee_config(
                sb, page_size=3, request_timeout=2, max_retry_wait_seconds=0.3
            ),
        }
        # 1. a clean run per provider: how many requests each path takes
        for config in configs.values():
            run_tap(config)
        baseline = [(r.provider, r.path) for r in sb.requests]
        sb.reset_requests()
        # 2. faults at random positions: a random tenth of the baseline requests
        picks = set(rng.sample(range(len(baseline)), round(SOAK_SHARE * len(baseline))))
        position: Counter[tuple[str, str]] = Counter()
        places = []
        for i, (provider, path) in enumerate(baseline):
            if i in picks:
                places.append((provider, path, position[provider, path]))
            position[provider, path] += 1
        # every kind about equally often, in random order
        kinds_in_order = (SOAK_KINDS * len(places))[: len(places)]
        rng.shuffle(kinds_in_order)
        faults = []
        for (provider, path, after), kind in zip(places, kinds_in_order, strict=True):
            spec = dict(kind)
            if spec["kind"] == "status" and spec["status"] == 429:
                spec["body"] = error_body(provider, 429)
            faults.append(sb.inject(Fault(provider=provider, path=path, after=after, **spec)))
        # 3. the faulty runs
        received, expected = 0, 0
        problems = {}
        for provider, config in configs.items():
            run = run_tap(config)
            want = expected_ids(sb, provider)
            expected += sum(len(v) for v in want.values())
            received += run.by_type["RECORD"]
            problems.update(
                {f"{provider}/{k}": v for k, v in record_set_diff(run.messages, want).items()}
            )
        applied = sum(f.applied for f in faults)
        # A delayed request is logged when its delay ends, which can be after the run.
        deadline = time.monotonic() + 5
        while len(sb.requests) < len(baseline) + applied and time.monotonic() < deadline:
            time.sleep(0.05)
        requests = len(sb.requests)
        kinds = Counter(f"{f.kind}{f.status or ''}" for f in faults for _ in range(f.applied))
    with capsys.disabled():
        print(
            f"\nsoak: {requests} requests ({len(baseline)} without faults), {applied} injected "
            f"faults ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}), records "
            f"expected {expected}, received {received}"
        )
    assert not problems, problems
    assert received == expected
    assert applied == len(faults) >= 12
    assert len(kinds) == len(SOAK_KINDS)
    assert requests == len(baseline) + applied

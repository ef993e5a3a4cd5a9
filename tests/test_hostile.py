"""Issue 9: the tap against a hostile API, one test per symptom, through the real CLI.

Each test asserts the desired behaviour (phase 1 marked 47 of them `xfail(strict=True)`
against the code of that time; the fixes of issue 9 removed every marker). Every run's
output goes through `validate_singer_output` (schema, keys, uniqueness).

Exit codes: a run that "fails" must end by itself (the runner's hard timeout did not fire)
with a non-zero code. A run stopped by SIGTERM/SIGINT must exit 143/130; dying of the
re-raised signal (Popen's -15/-2, which a shell also reports as 143/130) is accepted too.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

from tests.airbyte_utils import validate as validate_airbyte
from tests.hostile import (
    API_KEY,
    ENDPOINT,
    PATHS,
    ROOT,
    TENANT_HEADER,
    HostileServer,
    Raw,
    TapProcess,
    TapRun,
    bindbee_completion,
    bindbee_page,
    bindbee_user,
    by_header,
    catalog,
    cli_env,
    command,
    config,
    endless_chunked,
    envelope,
    gzip_bomb,
    in_turn,
    kombo_page,
    kombo_progress,
    kombo_user,
    paged,
    parse_lines,
    redirect,
    run_tap,
    slow_chunked,
    status,
    trickle_body,
    trickle_headers,
    users,
)
from tests.singer_validation import validate_singer_output

PROVIDERS = ("kombo", "bindbee")
SECRET_HEADERS = {"authorization", "x-integration-id", "x-connector-token"}
USERS = {"kombo": kombo_user, "bindbee": bindbee_user}


@pytest.fixture
def servers() -> t.Iterator[t.Callable[..., HostileServer]]:
    """A factory of started servers; all are stopped (shutdown + join) at the end."""
    started: list[HostileServer] = []

    def make(name: str = "api", cert: tuple[Path, Path] | None = None) -> HostileServer:
        server = HostileServer(name, cert=cert).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", str(key_file), "-out", str(cert_file)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert_file, key_file


def ids(records: t.Iterable[dict], key: str = "id") -> list:
    return [r.get(key) for r in records]


def tenants_config(provider: str, origin: str, names: t.Sequence[str], **kw: t.Any) -> dict:
    """Several tenants in `integrations`: Kombo ids `acme:<name>`, Bindbee names <name>."""
    settings = config(provider, origin, **kw)
    for name in ("integration_id", "connector_token", "connector_name"):
        settings.pop(name, None)
    if provider == "kombo":
        settings["integrations"] = [{"integration_id": f"acme:{n}"} for n in names]
    else:
        settings["integrations"] = [
            {"connector_token": f"token-{n}-secret", "name": n} for n in names
        ]
    return settings


def tenant_value(provider: str, name: str) -> str:
    """What the server sees in the tenant header for a tenant of `tenants_config`."""
    return f"acme:{name}" if provider == "kombo" else f"token-{name}-secret"


def tenant_key(provider: str, name: str) -> str:
    """How the tap names that tenant in logs."""
    return f"acme:{name}" if provider == "kombo" else name


def log_line(run: TapRun, *words: str, pattern: str = "") -> str | None:
    """The first stderr line containing every word (and matching `pattern`)."""
    for line in run.stderr.splitlines():
        if all(w in line for w in words) and re.search(pattern, line, re.I):
            return line
    return None


# ================================================================ 1. redirects and TLS


@pytest.mark.parametrize("code", [301, 302, 307])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_cross_origin_redirect_sends_no_credentials_and_fails(servers, tmp_path, provider, code):
    api, other = servers("api"), servers("other")
    path = PATHS[provider]["users"]
    api.route(path, redirect(other.url, code))
    other.route(path, paged(provider, [users(provider, "u", 3)]))
    run = run_tap(tmp_path, config(provider, api.url), catalog=catalog(provider, ["users"]))
    validate_singer_output(run.messages)
    leaked = [sorted(SECRET_HEADERS & r.headers.keys()) for r in other.hits()]
    assert not any(leaked), f"the other origin received {leaked}"
    assert run.returncode not in (0, None), run.describe()
    line = log_line(run, ENDPOINT[provider]["users"], f"127.0.0.1:{other.port}")
    assert line, f"no error naming the endpoint and the target host\n{run.describe()}"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_same_origin_redirect_is_followed_with_credentials(servers, tmp_path, provider):
    """A redirect to another path of the api_url's own origin is followed: credentials
    and tenant header arrive there, every record is emitted, exit 0."""
    api = servers()
    path = PATHS[provider]["users"]
    api.route(path, redirect(f"{api.url}/moved", 307))
    api.route(f"/moved{path}", paged(provider, [users(provider, "u", 3), users(provider, "v", 2)]))
    run = run_tap(tmp_path, config(provider, api.url), catalog=catalog(provider, ["users"]))
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    assert sorted(ids(run.records("users"))) == ["u0", "u1", "u2", "v0", "v1"]
    moved = api.hits(f"/moved{path}")
    assert len(moved) == 2
    assert all(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in moved)
    assert all(TENANT_HEADER[provider] in r.headers for r in moved)


@pytest.mark.parametrize(("provider", "trust"), [("kombo", "ca-bundle"), ("bindbee", "no-verify")])
def test_https_to_http_redirect_sends_nothing_over_http(servers, tmp_path, cert, provider, trust):
    """The https server is trusted through REQUESTS_CA_BUNDLE, or `tls_verify: false`;
    it redirects to http on another port: nothing at all may be sent there."""
    secure, plain = servers("tls", cert=cert), servers("plain")
    path = PATHS[provider]["users"]
    secure.route(path, redirect(plain.url, 302))
    plain.route(path, paged(provider, [users(provider, "u", 3)]))
    env = cli_env(REQUESTS_CA_BUNDLE=str(cert[0])) if trust == "ca-bundle" else cli_env()
    settings = config(provider, secure.url, tls_verify=trust == "ca-bundle")
    run = run_tap(tmp_path, settings, catalog=catalog(provider, ["users"]), env=env)
    validate_singer_output(run.messages)
    assert secure.hits(path), f"the https server received no request\n{run.describe()}"
    assert not plain.hits(), [sorted(r.headers) for r in plain.hits()]
    assert run.returncode not in (0, None), run.describe()
    assert log_line(run, ENDPOINT[provider]["users"], f"127.0.0.1:{plain.port}"), run.describe()


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_ca_bundle_from_the_environment_is_trusted(servers, tmp_path, cert, provider, variable):
    secure = servers("tls", cert=cert)
    secure.route(PATHS[provider]["users"], paged(provider, [users(provider, "u", 3)]))
    run = run_tap(
        tmp_path,
        config(provider, secure.url),
        catalog=catalog(provider, ["users"]),
        env=cli_env(**{variable: str(cert[0])}),
    )
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    assert ids(run.records("users")) == ["u0", "u1", "u2"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tls_error_suggests_a_ca_bundle_before_disabling_verification(
    servers, tmp_path, cert, provider
):
    secure = servers("tls", cert=cert)
    secure.route(PATHS[provider]["users"], paged(provider, [users(provider, "u", 3)]))
    run = run_tap(tmp_path, config(provider, secure.url), catalog=catalog(provider, ["users"]))
    validate_singer_output(run.messages)
    assert run.returncode not in (0, None), run.describe()
    text = run.stderr
    assert "REQUESTS_CA_BUNDLE" in text, run.describe()
    assert "tls_verify" not in text or text.index("REQUESTS_CA_BUNDLE") < text.index("tls_verify")


# ================================================================ 2. slow responses

#: A run facing a response that never completes must end well before this (it gives up
#: after request_timeout 3 s and one retry); the runner kills it at this bound.
SLOW_BOUND = 90  # each run needs ~7 s; six start at once on a loaded machine
SLOW = {
    "trickled-body": trickle_body,
    "trickled-headers": trickle_headers,
    "slow-endless-chunked": slow_chunked,
}


def test_never_ending_responses_end_the_run_with_a_timeout_error(servers, tmp_path):
    """Every behaviour for both providers, all runs at once (each may take the bound)."""
    procs = {}
    for kind, behaviour in SLOW.items():
        for provider in PROVIDERS:
            api = servers(f"{kind}-{provider}")
            api.route(PATHS[provider]["users"], behaviour())
            settings = config(provider, api.url, request_timeout=3, max_retries=1)
            procs[kind, provider] = TapProcess(
                tmp_path,
                settings,
                catalog=catalog(provider, ["users"]),
                timeout=SLOW_BOUND,
                name=f"{kind}-{provider}",
            ).start()
    failures = {}
    for (kind, provider), proc in procs.items():
        run = proc.wait()
        validate_singer_output(run.messages)
        ended = not run.timed_out and run.returncode not in (0, None)
        named = log_line(run, ENDPOINT[provider]["users"], pattern=r"time[d ]?\s?out")
        if not (ended and named):
            failures[f"{kind}/{provider}"] = run.describe()
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())


# ================================================================ 3. cursor cycles


def cycling(provider: str, give_up: int = 30) -> t.Callable:
    """Pages: (start) -> A -> B -> A -> ... After `give_up` requests the page has no
    cursor: a safety net so that a tap that does not notice the cycle still ends."""
    pages = {None: ("A", "u0"), "A": ("B", "u1"), "B": ("A", "u2")}
    count = [0]

    def handle(ex: t.Any) -> None:
        count[0] += 1
        following, key = pages[ex.request.query.get("cursor")]
        records = [USERS[provider](key)]
        ex.json(envelope(provider, records, None if count[0] >= give_up else following))

    return handle


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cursor_cycle_stops_with_a_pagination_loop_error(servers, tmp_path, provider):
    api = servers()
    path = PATHS[provider]["users"]
    api.route(path, cycling(provider))
    run = run_tap(tmp_path, config(provider, api.url), catalog=catalog(provider, ["users"]))
    requests = len(api.hits(path))
    assert run.returncode not in (0, None), f"{requests} requests; {run.describe()}"
    assert requests <= 4, f"{requests} requests before stopping"
    assert log_line(run, ENDPOINT[provider]["users"], pattern="pagination loop"), run.describe()
    validate_singer_output(run.messages)


# ================================================================ 4. oversized bodies

#: The setting the fix is expected to add, and the value the tests use.
MAX_RESPONSE_BYTES = 4_000_000
RSS_BOUND_MB = 300


def big_page(provider: str) -> bytes:
    """An honest page of about 16 MB: 40 records with a 400 kB object each."""
    pad = {"blob": "x" * 400_000}
    if provider == "kombo":
        records = [kombo_user(f"u{i}", remote_data=pad) for i in range(40)]
    else:
        records = [bindbee_user(f"u{i}", custom_fields=pad) for i in range(40)]
    return json.dumps(envelope(provider, records, None)).encode()


def oversized(kind: str, provider: str) -> t.Callable:
    if kind == "endless-chunked":
        return endless_chunked()
    if kind == "gzip-bomb":
        return gzip_bomb(provider)
    body = big_page(provider)
    return lambda ex: ex.send(body)


@pytest.mark.parametrize("kind", ["endless-chunked", "gzip-bomb", "big-page"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_oversized_response_fails_the_tenant_with_bounded_memory(servers, tmp_path, provider, kind):
    api = servers()
    api.route(PATHS[provider]["users"], oversized(kind, provider))
    settings = config(provider, api.url, max_response_bytes=MAX_RESPONSE_BYTES, max_retries=0)
    run = run_tap(
        tmp_path,
        settings,
        catalog=catalog(provider, ["users"]),
        timeout=60,
        rss_limit_mb=RSS_BOUND_MB,
    )
    validate_singer_output(run.messages)
    assert not run.rss_killed, run.describe()
    assert run.peak_rss_mb <= RSS_BOUND_MB, run.describe()
    assert run.returncode not in (0, None), run.describe()
    assert log_line(run, ENDPOINT[provider]["users"], "max_response_bytes"), run.describe()


# ================================================================ 5. rate-limit resets


def throttled(provider: str) -> t.Callable:
    """A 429 whose reset is now (Kombo `ratelimit-reset: 0`) or an hour ago (Bindbee's
    `X-RateLimit-Reset`, clock skew); then the page."""
    if provider == "kombo":
        headers = {"ratelimit-limit": "100", "ratelimit-remaining": "0", "ratelimit-reset": "0"}
        body: dict = {
            "status": "error",
            "error": {"code": "PLATFORM.RATE_LIMIT_EXCEEDED", "message": "slow down"},
        }
    else:
        headers = {
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(time.time()) - 3600),
        }
        body = {"detail": "Rate limit exceeded"}
    return in_turn(status(429, body, headers), paged(provider, [users(provider, "u", 3)]))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_a_reset_in_the_past_still_backs_off(servers, tmp_path, provider):
    api = servers()
    path = PATHS[provider]["users"]
    api.route(path, throttled(provider))
    settings = config(provider, api.url, max_retries=2, max_retry_wait_seconds=5)
    run = run_tap(tmp_path, settings, catalog=catalog(provider, ["users"]))
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    assert ids(run.records("users")) == ["u0", "u1", "u2"]
    first, retry = api.hits(path)[:2]
    gap = retry.time - first.time
    assert gap >= 0.5, f"retried {gap:.3f} s after the 429"


# ================================================================ 6. one bad tenant among three


def deep(levels: int) -> Raw:
    return Raw('{"a":' * levels + "1" + "}" * levels)


BAD_TENANT: dict[str, tuple[str, tuple[str, ...], t.Any, str]] = {
    # case: (provider, streams, the bad tenant's page, what the log must say was wrong)
    "kombo-results-are-numbers": ("kombo", ("users",), kombo_page([1, 2, 3], None), "object"),
    "kombo-remote-data-1500-deep": (
        "kombo",
        ("users",),
        kombo_page([kombo_user("bad-u0", remote_data=deep(1500))], None),
        "deep|depth|nest",
    ),
    "kombo-legacy-progress-is-an-object": (
        "kombo",
        ("users", "progress"),
        kombo_page([kombo_user("bad-u0", progress=kombo_progress("bad-p0"))], None),
        "progress",
    ),
    "bindbee-items-are-numbers": ("bindbee", ("users",), bindbee_page([1, 2], None), "object"),
}


@pytest.mark.parametrize("case", list(BAD_TENANT))
def test_one_bad_tenant_does_not_stop_the_healthy_ones(servers, tmp_path, case):
    provider, streams, bad_page, what = BAD_TENANT[case]
    api = servers()
    healthy = ("ok1", "ok2")
    handlers = {
        tenant_value(provider, n): paged(provider, [users(provider, f"{n}-u", 3)] * 1)
        for n in healthy
    }
    handlers[tenant_value(provider, "bad")] = lambda ex: ex.json(bad_page)
    api.route(PATHS[provider]["users"], by_header(TENANT_HEADER[provider], handlers))
    settings = tenants_config(provider, api.url, ["ok1", "bad", "ok2"])
    run = run_tap(tmp_path, settings, catalog=catalog(provider, streams))
    assert not run.traceback, run.stderr[-3000:]
    validate_singer_output(run.messages)
    expected = {f"{n}-u{i}" for n in healthy for i in range(3)}
    assert expected <= set(ids(run.records("users"))), run.describe()
    assert run.messages, run.describe()
    assert run.messages[-1]["type"] == "STATE", run.describe()
    assert run.returncode not in (0, None), run.describe()
    bad, endpoint = tenant_key(provider, "bad"), ENDPOINT[provider]["users"]
    assert log_line(run, bad, endpoint, pattern=what), run.describe()


# ================================================================ 7. valid but unusual JSON

ODD_JSON: dict[str, tuple[str, str, list[dict], str, str]] = {
    # case: (provider, stream, the page's records, the odd record's key, its field)
    "kombo-lone-surrogate": (
        "kombo",
        "users",
        [kombo_user("u0", first_name="Ada\ud83d"), kombo_user("u1")],
        "u0",
        "first_name",
    ),
    "bindbee-lone-surrogate": (
        "bindbee",
        "users",
        [bindbee_user("u0", first_name="Ada\ud83d"), bindbee_user("u1")],
        "u0",
        "first_name",
    ),
    "kombo-progress-score-1e400": (
        "kombo",
        "progress",
        [
            kombo_user(
                "u0", progress=[kombo_progress("p0", score=Raw("1e400")), kombo_progress("p1")]
            )
        ],
        "p0",
        "score",
    ),
    "bindbee-completion-score-1e400": (
        "bindbee",
        "completions",
        [bindbee_completion("c0", score=Raw("1e400")), bindbee_completion("c1")],
        "c0",
        "score",
    ),
}


@pytest.mark.parametrize("case", list(ODD_JSON))
def test_valid_but_unusual_json_is_read(servers, tmp_path, case):
    provider, stream, records, odd, name = ODD_JSON[case]
    api = servers()
    api.route(PATHS[provider][stream], paged(provider, [records]))
    streams = ["users", "progress"] if stream == "progress" else [stream]
    run = run_tap(tmp_path, config(provider, api.url), catalog=catalog(provider, streams))
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    key = "progress_id" if stream == "progress" else "id"
    emitted = {r[key]: r for r in run.records(stream)}
    assert odd in emitted, run.describe()
    value = emitted[odd][name]
    if name == "first_name":
        assert value == "Ada\ufffd"
    elif value is None:
        assert log_line(run, name, pattern="warn"), "score became null without a warning"
    else:
        assert isinstance(value, (int, float)), value


# ================================================================ 8. records match the SCHEMA


@pytest.mark.parametrize("provider", PROVIDERS)
def test_records_without_a_valid_id_are_not_emitted(servers, tmp_path, provider):
    make = USERS[provider]
    no_id = make("x")
    del no_id["id"]
    page = [make("good0"), make("x", id=None), no_id, make("x", id=7), make("good1")]
    api = servers()
    api.route(PATHS[provider]["users"], paged(provider, [page]))
    run = run_tap(tmp_path, config(provider, api.url), catalog=catalog(provider, ["users"]))
    validate_singer_output(run.messages)
    assert ids(run.records("users")) == ["good0", "good1"]
    assert run.returncode not in (0, None), run.describe()
    summary = log_line(run, f"Tenant {'acme:1' if provider == 'kombo' else 'acme'}: ")
    words = "(invalid|rejected|skipped|dropped)"
    assert summary, run.describe()
    assert re.search(rf"\b3\b[^;]*{words}|{words}\D*3\b", summary), summary


@pytest.mark.parametrize(
    ("name", "value"), [("remote_data", "oops"), ("integration_fields", {"a": 1})]
)
def test_values_of_the_wrong_type_become_null_with_a_warning(servers, tmp_path, name, value):
    api = servers()
    api.route(PATHS["kombo"]["users"], paged("kombo", [[kombo_user("u0", **{name: value})]]))
    run = run_tap(tmp_path, config("kombo", api.url), catalog=catalog("kombo", ["users"]))
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    (record,) = run.records("users")
    assert record[name] is None
    assert log_line(run, name, pattern="warn"), run.describe()


def test_fractional_completion_score_is_kept(servers, tmp_path):
    api = servers()
    page = [bindbee_completion("c0", score=87.5)]
    api.route(PATHS["bindbee"]["completions"], paged("bindbee", [page]))
    run = run_tap(tmp_path, config("bindbee", api.url), catalog=catalog("bindbee", ["completions"]))
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    assert [r["score"] for r in run.records("completions")] == [87.5]


#: Decision: a space instead of `T` is RFC 3339's own allowance (section 5.6, note), and
#: converting it loses nothing, so it becomes the canonical form. Any other separator, or
#: non-ASCII digits, is no timestamp: null, with a warning.
TIMESTAMPS = [
    pytest.param("2024-01-01X10:00:00.123Z", None, id="X-separator"),
    pytest.param("2024-01-01 10:00:00.123Z", "2024-01-01T10:00:00.123000Z", id="space"),
    pytest.param("2024-01-01T10:00:00.\u0661\u0662\u0663Z", None, id="arabic-indic-millis"),
]


@pytest.mark.parametrize(("value", "expected"), TIMESTAMPS)
def test_odd_timestamps_become_rfc3339_or_null_with_a_warning(servers, tmp_path, value, expected):
    api = servers()
    api.route(PATHS["kombo"]["users"], paged("kombo", [[kombo_user("u0", changed_at=value)]]))
    run = run_tap(tmp_path, config("kombo", api.url), catalog=catalog("kombo", ["users"]))
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    (record,) = run.records("users")
    assert record["changed_at"] == expected
    if expected is None:
        assert log_line(run, "changed_at", pattern="warn|not a timestamp"), run.describe()


# ================================================================ 9. signals with stdout blocked


def many_pages(provider: str, pages: int = 60, per_page: int = 100) -> t.Callable:
    pad = {"pad": "x" * 1000}

    def page(i: int) -> list | None:
        if i >= pages:
            return None
        return [USERS[provider](f"u{i}-{j}", custom_fields=pad) for j in range(per_page)]

    return paged(provider, page)


def whole(line: bytes) -> bool:
    """An empty line (the end) or one whole JSON message."""
    if not line:
        return True
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def wait_blocked_on_stdout(pid: int, timeout: float = 15) -> bool:
    """True once the tap's main thread sleeps in a pipe write (its stdout is full)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "pipe_write" in Path(f"/proc/{pid}/wchan").read_text():
                return True
        except OSError:
            return False
        time.sleep(0.05)
    return False


def airbyte_catalog(config_file: Path, streams: t.Iterable[str]) -> dict:
    """The source's own discovered catalog, configured for `streams` (incremental if it can)."""
    done = subprocess.run(
        [*AIRBYTE, "discover", "--config", str(config_file)],
        capture_output=True,
        check=True,
        cwd=ROOT,
        env=cli_env(),
        timeout=60,
    )
    (catalog_message,) = [m for m in parse_lines(done.stdout) if m["type"] == "CATALOG"]
    wanted = set(streams)
    return {
        "streams": [
            {
                "stream": stream,
                "sync_mode": stream["supported_sync_modes"][-1],
                "destination_sync_mode": "overwrite",
                "cursor_field": stream.get("default_cursor_field") or [],
                "primary_key": stream["source_defined_primary_key"],
            }
            for stream in catalog_message["catalog"]["streams"]
            if stream["name"] in wanted
        ]
    }


AIRBYTE = [sys.executable, "-m", "tap_lms_unified.airbyte"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("protocol", ["singer", "airbyte"])
def test_signal_while_stdout_is_blocked_ends_cleanly(servers, tmp_path, protocol, provider, sig):
    code = 128 + sig  # 143 for SIGTERM, 130 for Ctrl-C
    api = servers()
    api.route(PATHS[provider]["users"], many_pages(provider))
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config(provider, api.url)))
    catalog_file = tmp_path / "catalog.json"
    if protocol == "singer":
        catalog_file.write_text(json.dumps(catalog(provider, ["users"])))
        argv = command(config_file, catalog_file)
    else:
        catalog_file.write_text(json.dumps(airbyte_catalog(config_file, ["users"])))
        argv = [*AIRBYTE, "read", "--config", str(config_file), "--catalog", str(catalog_file)]
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT, env=cli_env()
        )
        try:
            blocked = wait_blocked_on_stdout(proc.pid)
            proc.send_signal(sig)
            time.sleep(0.5)
            out, _ = proc.communicate(timeout=60)  # drain
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = stderr_path.read_text(errors="replace")
    assert blocked, "the tap never blocked on its stdout: the scenario did not happen"
    assert out.endswith(b"\n"), f"cut last line: {out[-80:]!r}"
    broken = [(n, line[:120]) for n, line in enumerate(out.split(b"\n")) if not whole(line)]
    assert not broken, f"{len(broken)} lines are not whole JSON messages: {broken[:3]}"
    messages = parse_lines(out)
    if protocol == "singer":
        validate_singer_output(messages)  # includes: each RECORD key once
        assert messages[-1]["type"] == "STATE", messages[-1]["type"]
    else:
        for message in messages:
            validate_airbyte(message)
        ids = [m["record"]["data"]["id"] for m in messages if m["type"] == "RECORD"]
        assert ids, "no record was written before the signal"
        assert len(ids) == len(set(ids)), "a record was written twice"
        states = [i for i, m in enumerate(messages) if m["type"] == "STATE"]
        assert states, "no STATE after the signal"
        last_record = max(i for i, m in enumerate(messages) if m["type"] == "RECORD")
        assert states[-1] > last_record, "the last STATE does not follow the last record"
    assert proc.returncode in (code, -sig), f"exit {proc.returncode}\n{log[-2000:]}"


# ================================================================ 10. forced full table

BOOKMARK = "2024-06-01T00:00:00.000000Z"


def bookmarked(tenants: t.Iterable[str]) -> dict:
    partitions = [
        {
            "context": {"integration_id": f"acme:{n}"},
            "replication_key": "changed_at",
            "replication_key_value": BOOKMARK,
        }
        for n in tenants
    ]
    return {"bookmarks": {"users": {"partitions": partitions}}}


def two_tenants(api: HostileServer, failing: str | None = None) -> None:
    handlers = {
        f"acme:{n}": paged("kombo", [users("kombo", f"{n}-u", 3), users("kombo", f"{n}-v", 2)])
        for n in ("a", "b")
    }
    if failing:
        handlers[f"acme:{failing}"] = status(500)
    api.route(PATHS["kombo"]["users"], by_header("x-integration-id", handlers))


def activations(run: TapRun, stream: str) -> list[int]:
    """Positions of the stream's ACTIVATE_VERSION messages in the output."""
    return [
        i
        for i, m in enumerate(run.messages)
        if m["type"] == "ACTIVATE_VERSION" and m["stream"] == stream
    ]


def test_forced_full_table_walks_everything_then_activates(servers, tmp_path):
    api = servers()
    two_tenants(api)
    run = run_tap(
        tmp_path,
        tenants_config("kombo", api.url, ["a", "b"], emit_activate_version_messages=True),
        catalog=catalog("kombo", ["users"], full_table=["users"]),
        state=bookmarked(["a", "b"]),
    )
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    sent = [r.query for r in api.hits()]
    assert not [q for q in sent if "updated_after" in q], sent
    expected = {f"{n}-{p}{i}" for n in "ab" for p, k in (("u", 3), ("v", 2)) for i in range(k)}
    assert sorted(ids(run.records("users"))) == sorted(expected)
    last_record = max(
        i for i, m in enumerate(run.messages) if m["type"] == "RECORD" and m["stream"] == "users"
    )
    assert [i > last_record for i in activations(run, "users")] == [True]


def test_full_table_forced_in_the_metadata_alone_is_honoured(servers, tmp_path):
    """Only `forced-replication-method: FULL_TABLE` in the metadata; the entry keeps the
    discovered `replication_method: INCREMENTAL`: the metadata wins, no updated_after."""
    api = servers()
    two_tenants(api)
    forced = catalog("kombo", ["users"], full_table=["users"])
    for entry in forced["streams"]:
        if entry["tap_stream_id"] == "users":
            entry["replication_method"] = "INCREMENTAL"
    run = run_tap(
        tmp_path,
        tenants_config("kombo", api.url, ["a", "b"], emit_activate_version_messages=True),
        catalog=forced,
        state=bookmarked(["a", "b"]),
    )
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    assert not [r.query for r in api.hits() if "updated_after" in r.query]
    assert len(run.records("users")) == 10
    assert len(activations(run, "users")) == 1


def test_forced_full_table_with_a_start_date_is_bounded_and_does_not_activate(servers, tmp_path):
    """start_date is the user's own lower bound: a full-table walk keeps it (not the
    bookmark), and a walk it filtered must not soft-delete the rows it left out."""
    api = servers()
    two_tenants(api)
    settings = tenants_config(
        "kombo",
        api.url,
        ["a", "b"],
        emit_activate_version_messages=True,
        start_date="2024-01-01T00:00:00Z",
    )
    run = run_tap(
        tmp_path,
        settings,
        catalog=catalog("kombo", ["users"], full_table=["users"]),
        state=bookmarked(["a", "b"]),
    )
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    assert {r.query.get("updated_after") for r in api.hits()} == {"2023-12-31T23:59:59.999Z"}
    assert activations(run, "users") == []
    assert log_line(run, "Not activating", "start_date"), run.describe()


def test_forced_full_table_with_a_failed_tenant_does_not_activate(servers, tmp_path):
    api = servers()
    two_tenants(api, failing="b")
    run = run_tap(
        tmp_path,
        tenants_config(
            "kombo", api.url, ["a", "b"], emit_activate_version_messages=True, max_retries=0
        ),
        catalog=catalog("kombo", ["users"], full_table=["users"]),
    )
    validate_singer_output(run.messages)
    assert run.returncode not in (0, None), run.describe()
    assert {r["id"] for r in run.records("users")} >= {"a-u0", "a-v1"}
    assert activations(run, "users") == []


def test_incremental_walk_never_activates_a_version(servers, tmp_path):
    api = servers()
    two_tenants(api)
    run = run_tap(
        tmp_path,
        tenants_config("kombo", api.url, ["a", "b"], emit_activate_version_messages=True),
        catalog=catalog("kombo", ["users"]),
        state=bookmarked(["a", "b"]),
    )
    validate_singer_output(run.messages)
    assert run.returncode == 0, run.describe()
    assert all("updated_after" in r.query for r in api.hits())
    assert activations(run, "users") == []

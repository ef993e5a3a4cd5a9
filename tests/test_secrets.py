"""Secrets never leave the tap; transport security settings do what they say.

Every failure path of the fault matrix runs again with distinctive secrets (the sandbox
accepts a custom connector token; its API key is fixed, so wrong, distinctive keys cover
the key's own 401 path), plus error bodies that echo the request's credentials back, as
some gateways do. stdout (records, state), the log at DEBUG level, the exception and
everything chained to it, and once the real CLI's stdout and stderr are searched for the
API key and the connector token: zero hits.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import shutil
import ssl
import subprocess
import threading
import typing as t
from pathlib import Path

import pytest
import requests
from singer_sdk.exceptions import ConfigValidationError

from tap_lms_unified.sandbox import SANDBOX_API_KEY, Fault, Sandbox
from tap_lms_unified.tap import TapLmsUnified
from tests.conftest import bindbee_config, kombo_config, run_cli
from tests.reliability_utils import exception_texts, leaks, run_tap_exact

TOKEN = "cTok-7f3a9c21e5d84b06-LEAKCHECK"  # the Bindbee connector token of these tests
WRONG_KEY = "kKey-WRONG-4d2e8b1f90ac-LEAKCHECK"
WRONG_TOKEN = "cTok-WRONG-0b9e11d2c3f4-LEAKCHECK"
SECRETS = (SANDBOX_API_KEY, TOKEN, WRONG_KEY, WRONG_TOKEN)
PATHS = {"kombo": "/lms/users", "bindbee": "/api/lms/v1/users"}


def echo(provider: str, key: str = SANDBOX_API_KEY) -> str:
    """The request's credentials as an echoing gateway would quote them."""
    if provider == "kombo":
        return f"Authorization: Bearer {key}; X-Integration-Id: sandbox:acme"
    return f"Authorization: Bearer {key}; x-connector-token: {TOKEN}"


@pytest.fixture
def sb() -> t.Iterator[Sandbox]:
    with Sandbox(
        seed=13,
        kombo_users=12,
        progress_per_user=1,
        kombo_courses=2,
        kombo_skills=3,
        bindbee_users=12,
        bindbee_courses=2,
        bindbee_tokens={TOKEN: "acme"},
    ) as sandbox:
        yield sandbox


def config_for(sb: Sandbox, provider: str, **overrides: t.Any) -> dict:
    settings = {"page_size": 5, "request_timeout": 0.5, "max_retry_wait_seconds": 0.2}
    settings.update(overrides)
    if provider == "kombo":
        return kombo_config(sb, **settings)
    return bindbee_config(sb, connector_token=TOKEN, **settings)


def echo_body(provider: str, status: int, key: str = SANDBOX_API_KEY) -> dict:
    """An error body echoing the request's headers, in the provider's error shape."""
    text = echo(provider, key)
    if provider == "kombo":
        return {
            "status": "error",
            "error": {
                "code": "PLATFORM.AUTHENTICATION_INVALID" if status == 401 else "PLATFORM.X",
                "title": f"Rejected: {text}",
                "message": f"Request headers were {text}",
                "log_url": f"https://app.kombo.dev/logs?auth=Bearer%20{key}",
            },
        }
    if status == 422:
        return {
            "detail": [
                {"loc": ["header", "x-connector-token"], "msg": text, "input": TOKEN},
                {"loc": ["header", "authorization"], "msg": "bad", "input": key},
            ]
        }
    return {"detail": f"Request headers were {text}"}


def echo_headers(provider: str) -> dict[str, str]:
    headers = {"X-Echo-Authorization": f"Bearer {SANDBOX_API_KEY}"}
    if provider == "bindbee":
        headers["X-Echo-Token"] = TOKEN
    return headers


#: (name, faults, config overrides, should the run succeed)
PATHS_UNDER_TEST: list[tuple[str, t.Callable[[str], list[dict]], dict, bool]] = [
    (
        "429-echo-then-ok",
        lambda p: [
            {
                "kind": "status",
                "status": 429,
                "headers": {"Retry-After": "0", **echo_headers(p)},
                "body": echo_body(p, 429),
            }
        ],
        {},
        True,
    ),
    (
        "5xx-echo-burst-then-ok",
        lambda p: [
            {"kind": "status", "status": s, "body": echo_body(p, s), "after": i}
            for i, s in enumerate((500, 502, 503))
        ],
        {},
        True,
    ),
    (
        "plain-text-500-echo-then-ok",
        lambda p: [{"kind": "status", "status": 500, "body": f"upstream said: {echo(p)}"}],
        {},
        True,
    ),
    (
        "transport-faults-then-ok",
        lambda _p: [
            {"kind": "reset"},
            {"kind": "delay", "seconds": 1.0, "after": 1},
            {"kind": "truncate", "after": 2},
            {"kind": "html200", "after": 3},
        ],
        {},
        True,
    ),
    (
        "401-echo",
        lambda p: [{"kind": "status", "status": 401, "body": echo_body(p, 401)}],
        {},
        False,
    ),
    (
        "403-echo",
        lambda p: [{"kind": "status", "status": 403, "body": echo_body(p, 403)}],
        {},
        False,
    ),
    (
        "422-echo",
        lambda p: [{"kind": "status", "status": 422, "body": echo_body(p, 422)}],
        {},
        False,
    ),
    (
        "409-echo",
        lambda p: [{"kind": "status", "status": 409, "body": echo_body(p, 409)}],
        {},
        False,
    ),
    (
        "exhausted-503-echo",
        lambda p: [
            {
                "kind": "status",
                "status": 503,
                "body": echo_body(p, 503),
                "headers": echo_headers(p),
                "times": None,
            }
        ],
        {"max_retries": 1},
        False,
    ),
    (
        "exhausted-timeouts",
        lambda _p: [{"kind": "delay", "seconds": 1.0, "times": None}],
        {"max_retries": 1},
        False,
    ),
    (
        "exhausted-resets",
        lambda _p: [{"kind": "reset", "times": None}],
        {"max_retries": 1},
        False,
    ),
    ("pagination-loop", lambda _p: [{"kind": "repeat_cursor", "after": 1}], {}, False),
    ("not-the-envelope", lambda _p: [{"kind": "bad_envelope"}], {}, False),
    (
        "200-echo-not-the-envelope",
        lambda p: [{"kind": "status", "status": 200, "body": {"echo": echo(p)}}],
        {},
        False,
    ),
    ("wrong-api-key", lambda _p: [], {"api_key": WRONG_KEY}, False),
    (
        "wrong-api-key-echoed",
        lambda p: [{"kind": "status", "status": 401, "body": echo_body(p, 401, WRONG_KEY)}],
        {"api_key": WRONG_KEY},
        False,
    ),
]
CASES = [
    pytest.param(provider, faults, overrides, ok, id=f"{provider}-{name}")
    for name, faults, overrides, ok in PATHS_UNDER_TEST
    for provider in ("kombo", "bindbee")
]


@pytest.mark.parametrize(("provider", "faults", "overrides", "ok"), CASES)
def test_no_secret_in_any_output(sb, provider, faults, overrides, ok):
    for spec in faults(provider):
        sb.inject(Fault(provider=provider, path=PATHS[provider], **spec))
    run = run_tap_exact(
        config_for(sb, provider, **overrides),
        select={"users", "skills"},
        log_level=logging.DEBUG,
    )
    assert (run.error is None) == ok, repr(run.error)
    if ok:
        assert run.records("users")
    found = leaks([run.text, *exception_texts(run.error)], SECRETS)
    assert not found, found


@pytest.mark.parametrize("provider", ["kombo", "bindbee"])
def test_no_secret_from_the_keys_of_a_body_that_is_not_the_envelope(sb, provider):
    """The "not the envelope" error quotes body keys: redacted in the raised error too."""
    body = {echo(provider): "an echoing gateway keyed by header line"}
    sb.inject(Fault(provider=provider, path=PATHS[provider], kind="status", status=200, body=body))
    run = run_tap_exact(config_for(sb, provider), select={"users"})
    assert run.error is not None
    found = leaks([run.text, *exception_texts(run.error)], SECRETS)
    assert not found, found


def test_wrong_connector_token_is_not_echoed(sb):
    config = {**config_for(sb, "bindbee"), "connector_token": WRONG_TOKEN}
    run = run_tap_exact(config, log_level=logging.DEBUG)
    assert run.error is not None
    assert "401" in str(run.error)
    found = leaks([run.text, *exception_texts(run.error)], SECRETS)
    assert not found, found


@pytest.mark.parametrize("provider", ["kombo", "bindbee"])
def test_no_secret_in_the_cli_output(sb, tmp_path, provider):
    """The real CLI: a retried echoing 429, then an echoing 401 (with the SDK's traceback)."""
    sb.inject(
        Fault(
            provider=provider,
            path=PATHS[provider],
            kind="status",
            status=429,
            headers={"Retry-After": "0"},
            body=echo_body(provider, 429),
        )
    )
    sb.inject(
        Fault(
            provider=provider,
            path="/skills",
            kind="status",
            status=401,
            body=echo_body(provider, 401),
        )
    )
    result = run_cli(config_for(sb, provider), tmp_path)
    assert result.returncode != 0
    assert "401" in result.stderr
    found = leaks([result.text], SECRETS)
    assert not found, found
    # nor in the files the tap was given, beyond the config itself
    assert not leaks([p.read_text() for p in tmp_path.glob("*-state.json")], SECRETS)


# ------------------------------------------------------------------ transport security


def test_allow_insecure_http_permits_plain_http_to_a_remote_host():
    base = {"provider": "kombo", "api_key": "k-12345", "integration_id": "a:b"}
    url = "http://lms-proxy.internal.example.com/v1"
    with pytest.raises(ConfigValidationError):
        TapLmsUnified(config={**base, "api_url": url})
    tap = TapLmsUnified(config={**base, "api_url": url, "allow_insecure_http": True})
    assert tap.run.base_url == url
    bindbee = TapLmsUnified(
        config={
            "provider": "bindbee",
            "api_key": "k-12345",
            "connector_token": "t-12345",
            "api_url": "http://10.0.0.7:8080",
            "allow_insecure_http": True,
        }
    )
    assert bindbee.run.base_url == "http://10.0.0.7:8080"


class _Page(http.server.BaseHTTPRequestHandler):
    """Any GET: one Kombo page with one skill."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "status": "success",
                "data": {
                    "next": None,
                    "results": [{"id": "tls-skill", "name": "TLS", "changed_at": None}],
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: t.Any) -> None:
        pass


@pytest.fixture
def tls_url(tmp_path: Path) -> t.Iterator[str]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def verify_used(monkeypatch: pytest.MonkeyPatch) -> list[t.Any]:
    """The `verify` argument of every request the tap sends, whatever session sends it."""
    seen: list[t.Any] = []
    original = requests.adapters.HTTPAdapter.send

    def spy(self: t.Any, request: t.Any, **kwargs: t.Any) -> t.Any:
        seen.append(kwargs.get("verify"))
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    return seen


def tls_config(url: str, **overrides: t.Any) -> dict:
    return {
        "provider": "kombo",
        "api_key": SANDBOX_API_KEY,
        "integration_id": "sandbox:acme",
        "api_url": url,
        "max_retries": 0,
        **overrides,
    }


def test_tls_verification_is_on_by_default(tls_url, verify_used):
    run = run_tap_exact(tls_config(tls_url), select={"skills"})
    assert run.error is not None
    assert re.search(r"(?i)certificate|TLS", str(run.error)), str(run.error)
    assert run.records("skills") == []
    assert verify_used
    assert all(v is True for v in verify_used), verify_used


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verify_false_warns_and_turns_verification_off(tls_url, verify_used):
    run = run_tap_exact(tls_config(tls_url, tls_verify=False), select={"skills"})
    assert run.error is None, repr(run.error)
    assert [r["id"] for r in run.records("skills")] == ["tls-skill"]
    assert "'tls_verify' is false" in run.log
    assert "NOT verified" in run.log
    assert verify_used
    assert all(v is False for v in verify_used), verify_used


def test_certificate_failure_is_not_retried(tls_url, verify_used):
    """A certificate that fails verification will not pass on a retry: one attempt."""
    run = run_tap_exact(
        tls_config(tls_url, max_retries=2, max_retry_wait_seconds=0.1), select={"skills"}
    )
    assert run.error is not None
    assert len(verify_used) == 1, f"{len(verify_used)} attempts"

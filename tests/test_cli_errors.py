"""The real CLI, as a new user meets it: clear one-line errors, exit codes, state migration.

Every case runs `python -m tap_lms_unified` and checks the exit code, the exact message,
and that no traceback appears.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest

from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.sandbox import Sandbox
from tap_lms_unified.shaping import parse_utc
from tests.conftest import KOMBO_TENANT, ROOT, bindbee_config, bookmark, filter_value, kombo_config

EXIT_CONFIG, EXIT_API = 1, 3


@dataclass
class Result:
    code: int
    messages: list[dict[str, t.Any]]
    log: str

    def errors(self) -> list[str]:
        return [line for line in self.log.splitlines() if "ERROR" in line]

    def warnings(self) -> list[str]:
        return [line for line in self.log.splitlines() if "WARNING" in line]

    def records(self, stream: str) -> list[dict[str, t.Any]]:
        return [m["record"] for m in self.messages if m.get("stream") == stream and "record" in m]


def tap(tmp_path: Path, *args: str, files: dict[str, t.Any] | None = None) -> Result:
    """Run the CLI with files written from `files` (name → JSON value, or raw text)."""
    for name, content in (files or {}).items():
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "tap_lms_unified", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert "Traceback" not in result.stderr, result.stderr
    if "--discover" in args and result.returncode == 0:
        messages = [json.loads(result.stdout)]  # the catalog, pretty-printed
    else:
        messages = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return Result(result.returncode, messages, result.stderr)


# -- files and settings: one line, before any request ------------------------------------


@pytest.mark.parametrize(
    ("args", "files", "message"),
    [
        (
            ["--discover"],
            {},
            "Config validation error: 'provider' is a required property",
        ),
        (
            ["--config", "c.json", "--discover"],
            {"c.json": {"provider": "kombu", "api_key": "k"}},
            "Config validation error: 'provider' must be one of "
            f"{', '.join(PROVIDERS)}, got 'kombu'; did you mean 'kombo'?",
        ),
        (["--config", "c.json"], {"c.json": "nope"}, "The config file 'c.json' is not JSON"),
        (["--config", "c.json"], {"c.json": ""}, "The config file 'c.json' is empty"),
        (["--config", "missing.json"], {}, "The config file 'missing.json' does not exist"),
        (["--config", "c.json"], {"c.json": "[1]"}, "The config file 'c.json': must hold a JSON"),
        (
            ["--config", "c.json", "--state", "s.json"],
            {"c.json": {"provider": "kombo", "api_key": "k", "integration_id": "a"}, "s.json": "{"},
            "The state file 's.json' is not JSON",
        ),
        (
            ["--config", "c.json", "--state", "s.json"],
            {
                "c.json": {"provider": "kombo", "api_key": "k", "integration_id": "a"},
                "s.json": {"bookmarks": {"users": "x"}},
            },
            "The state file 's.json': 'bookmarks.users' must be an object, not a string",
        ),
        (
            ["--config", "c.json"],
            {
                "c.json": {
                    "provider": "kombo",
                    "api_key": "k",
                    "integration_id": "a",
                    "api_url": "/kombo/v1",
                }
            },
            "'api_url' must be an http(s) URL, got '/kombo/v1' (an environment variable it is "
            "built from may be unset)",
        ),
        (
            ["--config", "c.json"],
            {
                "c.json": {
                    "provider": "kombo",
                    "api_key": "k",
                    "integration_id": "a",
                    "page_size": 900,
                }
            },
            "'page_size' must be between 1 and 250 for kombo, got 900",
        ),
    ],
    ids=[
        "discover-no-config",
        "discover-unknown-provider",
        "config-not-json",
        "config-empty",
        "config-missing",
        "config-not-object",
        "state-not-json",
        "state-wrong-shape",
        "api-url-unset-variable",
        "page-size-range",
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, files, message):
    result = tap(tmp_path, *args, files=files)
    assert result.code == EXIT_CONFIG
    assert result.messages == []  # nothing was synced, nothing requested
    assert any(message in line for line in result.log.splitlines()), result.log


def test_unknown_settings_warn_with_the_closest_name(tmp_path):
    with Sandbox(seed=1, kombo_users=3, kombo_courses=1, kombo_skills=1) as sb:
        config = kombo_config(sb, pagesize=10, lookback_minutes=3)
        result = tap(tmp_path, "--config", "c.json", files={"c.json": config})
    assert result.code == 0
    assert any(
        "Unknown setting 'pagesize' is ignored; did you mean 'page_size'?" in w
        for w in result.warnings()
    )
    assert any(
        "Unknown setting 'lookback_minutes' is ignored; did you mean 'lookback_window_minutes'?"
        in w
        for w in result.warnings()
    )


# -- the API: one line naming endpoint and cause ------------------------------------------


def test_wrong_api_key_is_one_line(tmp_path):
    with Sandbox(seed=1) as sb:
        config = kombo_config(sb, api_key="wrong-key")
        result = tap(tmp_path, "--config", "c.json", files={"c.json": config})
    assert result.code == EXIT_API
    assert len(result.errors()) == 1, result.errors()
    assert "Run failed: GET /lms/" in result.errors()[0]
    assert "HTTP 401" in result.errors()[0]
    assert "check the api_key and integration_id" in result.errors()[0]


def test_unreachable_api_names_the_cause(tmp_path):
    # A port held by a socket that does not listen: connections to it are refused, and
    # no other process can take it while the test runs.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}/v1"
        config = {"provider": "kombo", "api_key": "k", "integration_id": "a", "api_url": url}
        config |= {"max_retries": 1, "max_retry_wait_seconds": 0.1}
        result = tap(tmp_path, "--config", "c.json", files={"c.json": config})
        port = held.getsockname()[1]
    assert result.code == EXIT_API
    assert len(result.errors()) == 1, result.errors()
    assert result.errors()[0].endswith(
        f"http://127.0.0.1:{port} did not answer ([Errno 111] Connection refused): "
        f"check 'api_url' ({url})"
    ), result.errors()[0]


@pytest.mark.parametrize("provider", ["kombo", "bindbee"])
def test_connection_test_passes_quietly_and_fails_clearly(tmp_path, provider):
    make = kombo_config if provider == "kombo" else bindbee_config
    with Sandbox(seed=1) as sb:
        ok = tap(tmp_path, "--config", "ok.json", "--test", files={"ok.json": make(sb)})
        bad = tap(
            tmp_path, "--config", "bad.json", "--test", files={"bad.json": make(sb, api_key="nope")}
        )
    assert ok.code == 0
    assert ok.errors() == []
    assert [m for m in ok.messages if m["type"] == "RECORD"]  # Meltano's test wants a record
    assert bad.code == EXIT_API
    assert any("HTTP 401" in line for line in bad.errors())


def test_unsorted_streams_are_explained_once(tmp_path):
    with Sandbox(seed=1, kombo_users=3, kombo_courses=1, kombo_skills=1) as sb:
        result = tap(tmp_path, "--config", "c.json", files={"c.json": kombo_config(sb)})
    assert result.code == 0
    assert "assumed to be unsorted" not in result.log
    assert result.log.count("Bookmarks move only when a stream has been read in full") == 1


# -- state a user brings -----------------------------------------------------------------


def _kombo_state(value: str, stream: str = "users") -> dict[str, t.Any]:
    return {
        "bookmarks": {stream: {"replication_key": "changed_at", "replication_key_value": value}}
    }


def _users_filters(sb: Sandbox) -> set[str | None]:
    return {r.params.get("updated_after") for r in sb.requests if r.path == "/lms/users"}


def test_unpartitioned_state_is_the_single_tenants_bookmark(tmp_path):
    value = "2025-06-01T00:00:00.000000Z"
    with Sandbox(seed=1, kombo_users=5, kombo_courses=1, kombo_skills=1) as sb:
        config = kombo_config(sb)
        result = tap(
            tmp_path,
            *("--config", "c.json", "--state", "s.json", "--catalog", "cat.json"),
            files={
                "c.json": config,
                "s.json": _kombo_state(value),
                "cat.json": _catalog(tmp_path, config, "users"),
            },
        )
        filters = _users_filters(sb)
    assert result.code == 0
    start = parse_utc(value) - __import__("datetime").timedelta(minutes=5)
    assert filters == {filter_value("kombo", start)}
    assert f"as those of tenant {KOMBO_TENANT}" in result.log
    assert bookmark(result.messages[-1]["value"], "users") is not None


def test_unpartitioned_state_with_several_tenants_is_ignored_with_one_warning(tmp_path):
    with Sandbox(seed=1, kombo_users=5, kombo_tenants=("sandbox:acme", "sandbox:globex")) as sb:
        config = kombo_config(
            sb,
            integration_id=None,
            integrations=[{"integration_id": "sandbox:acme"}, {"integration_id": "sandbox:globex"}],
        )
        result = tap(
            tmp_path,
            *("--config", "c.json", "--state", "s.json", "--catalog", "cat.json"),
            files={
                "c.json": config,
                "s.json": _kombo_state("2025-06-01T00:00:00Z"),
                "cat.json": _catalog(tmp_path, config, "users"),
            },
        )
        filters = _users_filters(sb)
    assert result.code == 0
    assert filters == {None}
    warnings = [w for w in result.warnings() if "stream-level bookmarks" in w]
    assert len(warnings) == 1
    assert "with 2 tenants they cannot be attributed and are ignored" in warnings[0]


@pytest.mark.parametrize(
    ("value", "why"),
    [("not-a-date", "is not a timestamp"), ("2099-01-01T00:00:00.000000Z", "lies in the future")],
)
def test_unusable_bookmark_warns_and_reads_the_stream_once(tmp_path, value, why):
    state = {
        "bookmarks": {
            "users": {
                "partitions": [
                    {
                        "context": {"integration_id": KOMBO_TENANT},
                        "replication_key": "changed_at",
                        "replication_key_value": value,
                    }
                ]
            }
        }
    }
    with Sandbox(seed=1, kombo_users=5, kombo_courses=1, kombo_skills=1) as sb:
        config = kombo_config(sb)
        result = tap(
            tmp_path,
            *("--config", "c.json", "--state", "s.json", "--catalog", "cat.json"),
            files={
                "c.json": config,
                "s.json": state,
                "cat.json": _catalog(tmp_path, config, "users"),
            },
        )
        filters = _users_filters(sb)
        users = len(sb.records("kombo", KOMBO_TENANT, "users"))
    assert result.code == 0
    assert filters == {None}
    assert len(result.records("users")) == users
    warnings = [w for w in result.warnings() if why in w]
    assert len(warnings) == 1
    assert f"Stream users, tenant {KOMBO_TENANT}" in warnings[0]
    new = bookmark(result.messages[-1]["value"], "users")
    assert new is not None
    assert parse_utc(new) < parse_utc("2099-01-01T00:00:00Z")


def test_catalog_with_a_stream_of_the_other_provider_warns(tmp_path):
    with Sandbox(seed=1, kombo_users=3, kombo_courses=1, kombo_skills=1) as sb:
        config = kombo_config(sb)
        catalog = _catalog(tmp_path, config, "users")
        extra = json.loads(json.dumps(catalog["streams"][0]))
        extra["tap_stream_id"] = extra["stream"] = "enrollments"
        catalog["streams"].append(extra)
        result = tap(
            tmp_path,
            "--config",
            "c.json",
            "--catalog",
            "cat.json",
            files={"c.json": config, "cat.json": catalog},
        )
    assert result.code == 0
    assert any(
        "The catalog lists streams that provider 'kombo' does not have, ignored: enrollments" in w
        for w in result.warnings()
    )


def _catalog(tmp_path: Path, config: dict[str, t.Any], *selected: str) -> dict[str, t.Any]:
    """The tap's own discovered catalog with only `selected` streams selected."""
    discovered = tap(
        tmp_path, "--config", "discover.json", "--discover", files={"discover.json": config}
    )
    catalog = discovered.messages[0]
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in selected
    return catalog

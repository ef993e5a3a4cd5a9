"""The Airbyte source (`source-lms-unified`) against the sandbox, every message validated.

Each command runs in-process through the CLI's `main` (one test runs the installed console
script as a subprocess). Every stdout line must be one Airbyte message that the protocol's
own models (`airbyte-protocol-models`, pydantic) accept, with the field its type requires;
the number of messages validated is printed when the module ends.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import typing as t
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from tap_lms_unified.airbyte.cli import main
from tap_lms_unified.sandbox import SANDBOX_API_KEY, Fault
from tap_lms_unified.shaping import utc_iso
from tests.airbyte_utils import FIELD_OF_TYPE, VALIDATED, expected_kombo_counts, parse
from tests.conftest import (
    BINDBEE_STREAMS,
    BINDBEE_TOKEN,
    KOMBO_STREAMS,
    KOMBO_TENANT,
    bindbee_config,
    kombo_config,
)

OTHER_KOMBO_TENANT = "sandbox:globex"


@pytest.fixture(scope="module", autouse=True)
def _report_validated(request):
    before = Counter(VALIDATED)
    yield
    validated = VALIDATED - before  # this module's
    total = sum(validated.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(validated.items()))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nAirbyte protocol: {total} messages validated ({detail})")


@dataclass
class SourceRun:
    """What one command wrote: validated Airbyte messages and the exit code."""

    messages: list[dict]
    exit_code: int

    def of(self, kind: str) -> list[dict]:
        return [m[FIELD_OF_TYPE[kind]] for m in self.messages if m["type"] == kind]

    def records(self, stream: str) -> list[dict]:
        return [r["data"] for r in self.of("RECORD") if r["stream"] == stream]

    def counts(self) -> Counter[str]:
        return Counter(r["stream"] for r in self.of("RECORD"))

    def states(self, stream: str) -> list[dict]:
        return [s for s in self.of("STATE") if s["stream"]["stream_descriptor"]["name"] == stream]

    def final_stream_state(self, stream: str) -> dict:
        return t.cast("dict", self.states(stream)[-1]["stream"]["stream_state"])

    def statuses(self, stream: str) -> list[str]:
        return [
            tr["stream_status"]["status"]
            for tr in self.of("TRACE")
            if tr["type"] == "STREAM_STATUS"
            and tr["stream_status"]["stream_descriptor"]["name"] == stream
        ]

    @property
    def errors(self) -> list[dict]:
        return [tr["error"] for tr in self.of("TRACE") if tr["type"] == "ERROR"]

    @property
    def status(self) -> dict:
        (status,) = self.of("CONNECTION_STATUS")
        return status

    @property
    def catalog(self) -> dict:
        (catalog,) = self.of("CATALOG")
        return catalog

    @property
    def text(self) -> str:
        return "\n".join(json.dumps(m) for m in self.messages)


def source(
    tmp_path: Path,
    command: str,
    config: dict | None = None,
    *,
    catalog: dict | None = None,
    state: t.Any = None,
) -> SourceRun:
    """Run `source-lms-unified <command>` in-process with files for its inputs."""
    argv = [command]
    inputs = {"config": config, "catalog": catalog, "state": state}
    for name, value in inputs.items():
        if value is not None:
            path = tmp_path / f"{name}-{time.monotonic_ns()}.json"
            path.write_text(json.dumps(value))
            argv += [f"--{name}", str(path)]
    stdout = io.BytesIO()
    code = main(argv, stdout=stdout)
    return SourceRun(parse(stdout.getvalue()), code)


def configured(
    catalog: dict,
    streams: t.Iterable[str] | None = None,
    sync_mode: str = "incremental",
) -> dict:
    """A ConfiguredAirbyteCatalog as PyAirbyte builds it (incremental for every stream)."""
    wanted = None if streams is None else set(streams)
    return {
        "streams": [
            {
                "stream": stream,
                "sync_mode": sync_mode,
                "destination_sync_mode": "overwrite",
                "cursor_field": stream.get("default_cursor_field") or [],
                "primary_key": stream["source_defined_primary_key"],
                "generation_id": None,
                "minimum_generation_id": None,
                "sync_id": None,
            }
            for stream in catalog["streams"]
            if wanted is None or stream["name"] in wanted
        ]
    }


def as_pyairbyte_state(run: SourceRun) -> list[dict]:
    """The state as PyAirbyte sends it back: the last STATE per stream, null keys and all."""
    last: dict[str, dict] = {}
    for state in run.of("STATE"):
        stream = state["stream"]
        last[stream["stream_descriptor"]["name"]] = {
            "type": "STREAM",
            "stream": {
                "stream_descriptor": {
                    "name": stream["stream_descriptor"]["name"],
                    "namespace": None,
                },
                "stream_state": stream["stream_state"],
            },
            "global_": None,
            "data": None,
            "sourceStats": {"recordCount": state["sourceStats"]["recordCount"]},
            "destinationStats": None,
        }
    return list(last.values())


def two_kombo_tenants(sandbox, **overrides: t.Any) -> dict:
    return kombo_config(sandbox, integrations=[{"integration_id": OTHER_KOMBO_TENANT}], **overrides)


def kombo_catalog(tmp_path, sandbox) -> dict:
    return source(tmp_path, "discover", kombo_config(sandbox)).catalog


# ---------------------------------------------------------------- spec


@pytest.mark.parametrize("after_a_tap", [False, True], ids=["fresh", "after-a-tap"])
def test_spec_is_the_tap_settings_with_airbyte_secrets(tmp_path, sandbox, after_a_tap):
    if after_a_tap:  # the SDK then has merged its built-in settings into the class schema
        from tap_lms_unified.tap import TapLmsUnified

        TapLmsUnified(config=kombo_config(sandbox))
        assert "stream_maps" in TapLmsUnified.config_jsonschema["properties"]
    run = source(tmp_path, "spec")
    assert run.exit_code == 0
    assert [m["type"] for m in run.messages] == ["SPEC"]
    (spec,) = run.of("SPEC")
    assert spec["supportsIncremental"] is True
    schema = spec["connectionSpecification"]
    jsonschema.Draft202012Validator.check_schema(schema)
    properties = schema["properties"]
    assert schema["required"] == ["provider", "api_key"]
    assert properties["api_key"]["airbyte_secret"] is True
    assert properties["connector_token"]["airbyte_secret"] is True
    nested = properties["integrations"]["items"]["properties"]
    assert nested["connector_token"]["airbyte_secret"] is True
    secrets = {name for name, p in properties.items() if p.get("airbyte_secret")}
    assert secrets == {"api_key", "connector_token"}
    assert "emit_activate_version_messages" not in properties
    assert not {"stream_maps", "flattening_enabled", "batch_config"} & set(properties)
    # what PyAirbyte does before running anything: the config is valid for the spec
    for config in (two_kombo_tenants(sandbox), bindbee_config(sandbox)):
        jsonschema.validate(config, schema)
    with pytest.raises(jsonschema.ValidationError, match="page_size"):
        jsonschema.validate(kombo_config(sandbox, page_size="big"), schema)


# ---------------------------------------------------------------- check


def endpoint_paths(config: dict) -> set[str]:
    """The paths of a provider's endpoints (paired streams share one)."""
    from tap_lms_unified.tap import TapLmsUnified

    tap = TapLmsUnified(config=config)
    assert tap.streams  # registers them with the run
    return {getattr(stream, "path") for stream in tap.streams.values()}  # noqa: B009


def test_check_reaches_every_tenant_and_writes_no_record(tmp_path, sandbox):
    tenants = (KOMBO_TENANT, OTHER_KOMBO_TENANT)
    run = source(tmp_path, "check", two_kombo_tenants(sandbox))
    assert run.exit_code == 0
    assert run.status["status"] == "SUCCEEDED"
    assert KOMBO_TENANT in run.status["message"]
    assert OTHER_KOMBO_TENANT in run.status["message"]
    assert {m["type"] for m in run.messages} <= {"CONNECTION_STATUS", "LOG", "TRACE"}
    assert not [lg for lg in run.of("LOG") if lg["level"] in ("ERROR", "FATAL")]
    # the first page of every endpoint, once per tenant (Run.test_connection)
    seen = Counter((r.tenant, r.path) for r in sandbox.requests)
    paths = endpoint_paths(kombo_config(sandbox))
    assert seen == {(tenant, path): 1 for tenant in tenants for path in paths}
    assert len(paths) >= 4


def test_check_bindbee(tmp_path, sandbox):
    run = source(tmp_path, "check", bindbee_config(sandbox))
    assert run.status["status"] == "SUCCEEDED"
    seen = Counter((r.tenant, r.path) for r in sandbox.requests)
    assert seen == {("acme", path): 1 for path in endpoint_paths(bindbee_config(sandbox))}


def test_check_with_a_wrong_api_key_fails_readably(tmp_path, sandbox):
    key = "wrong-key-0123456789"
    run = source(tmp_path, "check", two_kombo_tenants(sandbox, api_key=key))
    assert run.exit_code == 0
    assert run.status["status"] == "FAILED"
    message = run.status["message"]
    assert message.startswith("2 of 2 kombo tenants failed")
    assert "HTTP 401" in message
    assert "check the api_key" in message
    assert key not in run.text
    assert not run.of("RECORD")


def test_check_fails_for_one_bad_tenant_among_several(tmp_path, sandbox):
    config = two_kombo_tenants(sandbox)
    config["integrations"].append({"integration_id": "sandbox:unknown"})
    run = source(tmp_path, "check", config)
    assert run.status["status"] == "FAILED"
    assert run.status["message"].startswith("1 of 3 kombo tenants failed: sandbox:unknown:")
    assert "HTTP 404" in run.status["message"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"provider": None}, "provider"),
        ({"integration_id": None}, "integration_id"),
        ({"page_size": 1000}, "page_size"),
        ({"page_size": "big"}, "page_size"),
        ({"api_url": "http://lms.example.com/v1"}, "api_url"),
    ],
)
def test_check_with_bad_settings_names_them_and_sends_nothing(tmp_path, sandbox, change, named):
    config = {k: v for k, v in {**kombo_config(sandbox), **change}.items() if v is not None}
    run = source(tmp_path, "check", config)
    assert run.exit_code == 0
    assert run.status["status"] == "FAILED"
    assert named in run.status["message"]
    assert SANDBOX_API_KEY not in run.text
    assert not sandbox.requests


# ---------------------------------------------------------------- discover


def test_discover_kombo_streams_are_incremental_with_their_cursor(tmp_path, sandbox):
    from tap_lms_unified.tap import TapLmsUnified

    run = source(tmp_path, "discover", kombo_config(sandbox))
    assert run.exit_code == 0
    streams = {s["name"]: s for s in run.catalog["streams"]}
    assert set(streams) == set(KOMBO_STREAMS)
    tap = TapLmsUnified(config=kombo_config(sandbox))
    for name, stream in streams.items():
        ours = tap.streams[name]
        assert stream["supported_sync_modes"] == ["full_refresh", "incremental"]
        assert stream["source_defined_cursor"] is True
        assert stream["default_cursor_field"] == [ours.replication_key]
        assert stream["source_defined_primary_key"] == [[k] for k in ours.primary_keys]
        assert stream["json_schema"] == ours.schema
        jsonschema.Draft202012Validator.check_schema(stream["json_schema"])
    assert streams["progress"]["default_cursor_field"] == ["user_changed_at"]
    assert streams["progress"]["source_defined_primary_key"] == [["progress_id"]]
    assert "_sdc_deleted_at" in streams["users"]["json_schema"]["properties"]
    assert not sandbox.requests  # discovery needs no API call


def test_discover_bindbee_streams_are_full_refresh_only(tmp_path, sandbox):
    run = source(tmp_path, "discover", bindbee_config(sandbox))
    streams = {s["name"]: s for s in run.catalog["streams"]}
    assert set(streams) == set(BINDBEE_STREAMS)
    for stream in streams.values():
        assert stream["supported_sync_modes"] == ["full_refresh"]
        assert "default_cursor_field" not in stream
        assert stream["source_defined_primary_key"] == [["id"]]


def test_discover_with_a_bad_config_is_a_config_error(tmp_path):
    run = source(tmp_path, "discover", {"provider": "kombo", "api_key": SANDBOX_API_KEY})
    assert run.exit_code == 1
    assert not run.of("CATALOG")
    (error,) = run.errors
    assert error["failure_type"] == "config_error"
    assert "'integration_id' is required" in error["message"]


# ---------------------------------------------------------------- read


def test_read_kombo_every_record_with_per_stream_state(tmp_path, sandbox):
    catalog = configured(kombo_catalog(tmp_path, sandbox))
    started = int(time.time() * 1000)
    run = source(tmp_path, "read", two_kombo_tenants(sandbox), catalog=catalog)
    assert run.exit_code == 0, run.errors
    assert run.counts() == expected_kombo_counts(sandbox, [KOMBO_TENANT, OTHER_KOMBO_TENANT])
    schemas = {s["stream"]["name"]: s["stream"]["json_schema"] for s in catalog["streams"]}
    for record in run.of("RECORD"):
        assert started <= record["emitted_at"] <= int(time.time() * 1000)
        jsonschema.validate(record["data"], schemas[record["stream"]])
    for stream in KOMBO_STREAMS:
        assert run.statuses(stream) == ["STARTED", "RUNNING", "COMPLETE"]
        # the tap's per-tenant bookmark structure, one partition per tenant
        state = run.final_stream_state(stream)
        contexts = [p["context"] for p in state["partitions"]]
        assert contexts == [
            {"integration_id": KOMBO_TENANT},
            {"integration_id": OTHER_KOMBO_TENANT},
        ]
        for partition in state["partitions"]:
            tenant = partition["context"]["integration_id"]
            newest = max(
                r[partition["replication_key"]]
                for r in run.records(stream)
                if r["integration_id"] == tenant
            )
            assert partition["replication_key_value"] == newest
        counted = sum(s["sourceStats"]["recordCount"] for s in run.states(stream))
        assert counted == run.counts()[stream]
        # order: STARTED, records, STATE, COMPLETE
        kinds = [
            "RECORD"
            if m["type"] == "RECORD"
            else m["type"] + ":" + (m.get("trace", {}).get("stream_status") or {}).get("status", "")
            for m in run.messages
            if (m["type"] == "RECORD" and m["record"]["stream"] == stream)
            or (
                m["type"] == "STATE" and m["state"]["stream"]["stream_descriptor"]["name"] == stream
            )
            or (
                m["type"] == "TRACE"
                and m["trace"].get("stream_status", {}).get("stream_descriptor", {}).get("name")
                == stream
            )
        ]
        assert kinds[:2] == ["TRACE:STARTED", "TRACE:RUNNING"]
        assert kinds[-2:] == ["STATE:", "TRACE:COMPLETE"]
        assert set(kinds[2:-2]) == {"RECORD"}
    # deletions stay a column
    deleted = [u for u in run.records("users") if u["remote_deleted_at"]]
    assert deleted
    assert all(u["_sdc_deleted_at"] == u["remote_deleted_at"] for u in deleted)


def test_read_only_the_configured_streams_and_columns(tmp_path, sandbox):
    discovered = kombo_catalog(tmp_path, sandbox)
    catalog = configured(discovered, ["skills"])
    schema = catalog["streams"][0]["stream"]["json_schema"]
    schema["properties"] = {k: schema["properties"][k] for k in ("id", "name", "changed_at")}
    run = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog)
    assert run.exit_code == 0
    assert set(run.counts()) == {"skills"}
    assert {r.path for r in sandbox.requests} == {"/lms/skills"}
    assert all(set(r) == {"id", "name", "changed_at"} for r in run.records("skills"))
    assert {s["stream"]["stream_descriptor"]["name"] for s in run.of("STATE")} == {"skills"}


def test_state_round_trip_as_pyairbyte_sends_it(tmp_path, sandbox):
    catalog = configured(kombo_catalog(tmp_path, sandbox), ["users", "progress", "skills"])
    first = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog)
    state = as_pyairbyte_state(first)
    assert {s["stream"]["stream_descriptor"]["name"] for s in state} == {
        "users",
        "progress",
        "skills",
    }
    changed = sandbox.mutate("kombo", KOMBO_TENANT, "users", change=4, delete=2)
    sandbox.reset_requests()

    second = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog, state=state)
    assert second.exit_code == 0, second.errors
    sent = {r.params.get("updated_after") for r in sandbox.requests}
    assert None not in sent
    assert len(sent) == 2  # users (and its progress) and skills, each from its bookmark
    users = {u["id"] for u in second.records("users")}
    assert set(changed["changed"]) | set(changed["deleted"]) <= users
    assert len(users) < len(first.records("users"))
    assert len(second.records("skills")) < len(first.records("skills"))
    # the bookmark moved forward, the untouched skills' bookmark stayed
    old, new = (r.final_stream_state("users")["partitions"][0] for r in (first, second))
    assert new["replication_key_value"] > old["replication_key_value"]
    assert second.final_stream_state("skills") == first.final_stream_state("skills")


@pytest.mark.parametrize("shape", ["singer", "legacy", "mapping", "global"])
def test_legacy_state_shapes_are_read(tmp_path, sandbox, shape):
    catalog = configured(kombo_catalog(tmp_path, sandbox), ["skills"])
    first = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog)
    stream_state = first.final_stream_state("skills")
    state = {
        "singer": {"bookmarks": {"skills": stream_state}},
        "legacy": {"type": "LEGACY", "data": {"bookmarks": {"skills": stream_state}}},
        "mapping": {"skills": stream_state},
        "global": [
            {
                "type": "GLOBAL",
                "global": {
                    "shared_state": None,
                    "stream_states": [
                        {"stream_descriptor": {"name": "skills"}, "stream_state": stream_state}
                    ],
                },
            }
        ],
    }[shape]
    sandbox.reset_requests()
    second = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog, state=state)
    assert second.exit_code == 0
    bookmark = stream_state["partitions"][0]["replication_key_value"]
    (updated_after,) = {r.params.get("updated_after") for r in sandbox.requests}
    assert updated_after is not None
    assert utc_iso(updated_after) < bookmark  # minus the lookback window


def test_full_refresh_ignores_the_state(tmp_path, sandbox):
    discovered = kombo_catalog(tmp_path, sandbox)
    first = source(tmp_path, "read", kombo_config(sandbox), catalog=configured(discovered))
    state = as_pyairbyte_state(first)
    sandbox.reset_requests()
    catalog = configured(discovered, sync_mode="full_refresh")
    second = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog, state=state)
    assert second.exit_code == 0
    assert second.counts() == first.counts()
    assert all("updated_after" not in r.params for r in sandbox.requests)
    for stream in KOMBO_STREAMS:
        assert second.statuses(stream)[-1] == "COMPLETE"
        assert "replication_key_value" not in json.dumps(second.final_stream_state(stream))


def test_full_refresh_keeps_start_date_as_its_lower_bound(tmp_path, sandbox):
    catalog = configured(kombo_catalog(tmp_path, sandbox), ["skills"], sync_mode="full_refresh")
    state = {"bookmarks": {"skills": {"replication_key_value": "2099-01-01T00:00:00.000000Z"}}}
    config = kombo_config(sandbox, start_date="2024-06-01T00:00:00Z")
    run = source(tmp_path, "read", config, catalog=catalog, state=state)
    assert run.exit_code == 0
    assert {r.params.get("updated_after") for r in sandbox.requests} == {"2024-05-31T23:59:59.999Z"}
    expected = sandbox.records("kombo", KOMBO_TENANT, "skills")
    assert len(run.records("skills")) == sum(
        1 for s in expected if utc_iso(s["changed_at"]) >= "2024-06-01T00:00:00.000000Z"
    )


def test_read_bindbee_full_refresh_without_activate_version(tmp_path, sandbox):
    catalog = configured(source(tmp_path, "discover", bindbee_config(sandbox)).catalog)
    run = source(tmp_path, "read", bindbee_config(sandbox), catalog=catalog)
    assert run.exit_code == 0, run.errors
    for stream in BINDBEE_STREAMS:
        expected = len(sandbox.records("bindbee", BINDBEE_TOKEN, stream))
        assert len(run.records(stream)) == expected > 0
        assert {r["connector_name"] for r in run.records(stream)} == {"acme"}
        assert run.statuses(stream) == ["STARTED", "RUNNING", "COMPLETE"]
        assert run.final_stream_state(stream) == {
            "partitions": [{"context": {"connector_name": "acme"}}]
        }
    assert "ACTIVATE_VERSION" not in run.text
    assert BINDBEE_TOKEN not in run.text


def test_read_with_a_wrong_api_key_is_a_config_error(tmp_path, sandbox):
    key = "wrong-key-0123456789"
    catalog = configured(kombo_catalog(tmp_path, sandbox), ["skills", "users"])
    run = source(tmp_path, "read", kombo_config(sandbox, api_key=key), catalog=catalog)
    assert run.exit_code == 1
    assert not run.of("RECORD")
    errors = run.errors
    assert errors
    assert {e["failure_type"] for e in errors} == {"config_error"}
    assert "HTTP 401" in errors[0]["message"]
    assert errors[0]["stream_descriptor"] == {"name": "skills"}
    assert run.statuses("skills") == ["STARTED", "INCOMPLETE"]
    assert run.statuses("users") == ["STARTED", "INCOMPLETE"]
    assert key not in run.text


def test_read_with_a_bad_config_is_a_config_error_before_any_request(tmp_path, sandbox):
    catalog = configured(kombo_catalog(tmp_path, sandbox), ["skills"])
    run = source(tmp_path, "read", kombo_config(sandbox, page_size="big"), catalog=catalog)
    assert run.exit_code == 1
    (error,) = run.errors
    assert error["failure_type"] == "config_error"
    assert "page_size" in error["message"]
    assert not sandbox.requests
    assert [m["type"] for m in run.messages if m["type"] != "LOG"] == ["TRACE"]


def test_read_with_a_malformed_state_is_a_config_error_before_any_request(tmp_path, sandbox):
    catalog = configured(kombo_catalog(tmp_path, sandbox), ["skills"])
    state = {"bookmarks": {"skills": {"partitions": "not a list"}}}
    run = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog, state=state)
    assert run.exit_code == 1
    (error,) = run.errors
    assert error["failure_type"] == "config_error"
    assert "partitions must be a list" in error["message"]
    assert not sandbox.requests


def test_read_a_stream_the_provider_has_not_is_a_config_error(tmp_path, sandbox):
    bindbee_catalog = source(tmp_path, "discover", bindbee_config(sandbox)).catalog
    catalog = configured(bindbee_catalog, ["enrollments"])
    run = source(tmp_path, "read", kombo_config(sandbox), catalog=catalog)
    assert run.exit_code == 1
    (error,) = run.errors
    assert error["failure_type"] == "config_error"
    assert "enrollments" in error["message"]


def test_one_failing_kombo_tenant_among_several(tmp_path, sandbox):
    """Retries run out for one tenant: the other's records and state go through."""
    sandbox.inject(
        Fault(
            provider="kombo",
            path="/lms/skills",
            tenant=OTHER_KOMBO_TENANT,
            kind="status",
            status=503,
            times=None,
        )
    )
    catalog = configured(kombo_catalog(tmp_path, sandbox), ["skills", "users"])
    config = two_kombo_tenants(sandbox, max_retries=1, max_retry_wait_seconds=0.1)
    run = source(tmp_path, "read", config, catalog=catalog)
    assert run.exit_code == 1
    (error,) = run.errors
    assert error["failure_type"] == "transient_error"
    assert error["message"].startswith(f"Tenant {OTHER_KOMBO_TENANT} failed on stream skills:")
    assert "HTTP 503" in error["message"]
    assert error["stream_descriptor"] == {"name": "skills"}
    # the good tenant: all its records, its bookmarks; the failed one keeps none
    for stream in ("skills", "users"):
        assert {r["integration_id"] for r in run.records(stream)} == {KOMBO_TENANT}
        assert len(run.records(stream)) == len(sandbox.records("kombo", KOMBO_TENANT, stream))
        partitions = {
            p["context"]["integration_id"]: p for p in run.final_stream_state(stream)["partitions"]
        }
        assert partitions[KOMBO_TENANT]["replication_key_value"]
        assert "replication_key_value" not in partitions.get(OTHER_KOMBO_TENANT, {})
        assert run.statuses(stream) == ["STARTED", "RUNNING", "INCOMPLETE"]


def test_one_refused_bindbee_connector_among_several(tmp_path, sandbox):
    config = bindbee_config(sandbox)
    config["integrations"] = [{"connector_token": "tok-revoked-5555555", "name": "revoked"}]
    catalog = configured(source(tmp_path, "discover", config).catalog, ["users"])
    run = source(tmp_path, "read", config, catalog=catalog)
    assert run.exit_code == 1
    (error,) = run.errors
    assert error["failure_type"] == "config_error"
    assert error["message"].startswith("Tenant revoked failed on stream users:")
    assert {r["connector_name"] for r in run.records("users")} == {"acme"}
    assert "tok-revoked-5555555" not in run.text


# ---------------------------------------------------------------- the real executable


def test_console_script_stdout_is_only_airbyte_messages(tmp_path, sandbox):
    executable = Path(sys.executable).parent / "source-lms-unified"
    assert executable.exists(), "pip install -e . creates the console script"
    env = {**os.environ, "PYTHONWARNINGS": "error"}

    def run(*args: str) -> tuple[int, list[dict], str]:
        done = subprocess.run(
            [str(executable), *args], capture_output=True, timeout=120, env=env, check=False
        )
        return done.returncode, parse(done.stdout), done.stderr.decode()

    config = tmp_path / "config.json"
    config.write_text(json.dumps(kombo_config(sandbox)))
    code, messages, stderr = run("spec")
    assert (code, [m["type"] for m in messages], stderr) == (0, ["SPEC"], "")
    code, messages, stderr = run("discover", "--config", str(config))
    assert (code, stderr) == (0, "")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(configured(messages[-1]["catalog"], ["skills"])))
    code, messages, stderr = run("read", "--config", str(config), "--catalog", str(catalog))
    assert (code, stderr) == (0, "")
    assert Counter(m["type"] for m in messages)["RECORD"] == 8
    config.write_text(json.dumps(kombo_config(sandbox, api_key="wrong-key-0123456789")))
    code, messages, stderr = run("read", "--config", str(config), "--catalog", str(catalog))
    assert (code, stderr) == (1, "")
    assert messages[-1]["type"] == "TRACE"
    assert messages[-1]["trace"]["error"]["failure_type"] == "config_error"
    code, _, stderr = run("read", "--config", str(config))
    assert code == 2  # argparse: --catalog is required
    assert "--catalog" in stderr

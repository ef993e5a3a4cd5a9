"""Fixtures: a sandbox API on 127.0.0.1 and a tap runner that captures its Singer output."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import subprocess
import sys
import typing as t
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pytest

from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.sandbox import SANDBOX_API_KEY, Sandbox
from tap_lms_unified.tap import TapLmsUnified
from tests.singer_validation import validate_singer_output

if t.TYPE_CHECKING:
    from tap_lms_unified.streams import LmsStream

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
KOMBO_TENANT = "sandbox:acme"
BINDBEE_TOKEN = "sandbox-connector-acme"


# --------------------------------------------------------- the provider modules' facts


def stream_classes(provider: str) -> dict[str, type[LmsStream]]:
    """A provider's stream classes by name, in discovery order."""
    # The SDK types `name` as an instance attribute; the stream classes declare it.
    classes = t.cast("tuple[type[LmsStream], ...]", PROVIDERS[provider].streams)
    return {str(getattr(cls, "name")): cls for cls in classes}  # noqa: B009


def primary_keys(provider: str, stream: str) -> tuple[str, ...]:
    """A stream's `primary_keys`, as its class declares them."""
    return tuple(getattr(stream_classes(provider)[stream], "primary_keys"))  # noqa: B009


def primary_key(provider: str, stream: str) -> str:
    """The one primary key of a stream (every stream of the tap has one)."""
    (key,) = primary_keys(provider, stream)
    return key


def relations_of(provider: str, stream: str) -> tuple[str, ...]:
    """The fields of a stream that are relations, emitted as ids (Bindbee's `relations`)."""
    return tuple(getattr(stream_classes(provider)[stream], "relations", ()))


def filter_value(provider: str, moment: t.Any) -> str:
    """The incremental filter's value a provider sends for records changed since `moment`."""
    where = PROVIDERS[provider].incremental
    assert where is not None, f"{provider} has no incremental filter"
    return where.value(moment)


KOMBO_STREAMS = tuple(stream_classes("kombo"))
BINDBEE_STREAMS = tuple(stream_classes("bindbee"))


@dataclass
class TapRun:
    """Everything one tap run wrote: Singer messages (stdout) and log lines (stderr)."""

    messages: list[dict]
    log: str
    error: BaseException | None = None
    by_type: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.by_type = Counter(m["type"] for m in self.messages)

    def records(self, stream: str) -> list[dict]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def schemas(self, stream: str | None = None) -> list[dict]:
        return [
            m
            for m in self.messages
            if m["type"] == "SCHEMA" and (stream is None or m["stream"] == stream)
        ]

    def streams(self) -> set[str]:
        return {m["stream"] for m in self.messages if m["type"] == "RECORD"}

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def final_state(self) -> dict:
        return self.states[-1] if self.states else {}

    @property
    def text(self) -> str:
        """All output, for secret greps."""
        return json.dumps(self.messages) + "\n" + self.log


def run_tap(
    config: dict,
    *,
    state: dict | None = None,
    catalog: dict | None = None,
    select: t.Iterable[str] | None = None,
    expect_error: bool = False,
    prepare: t.Callable[[TapLmsUnified], None] | None = None,
    log_level: int = logging.INFO,
) -> TapRun:
    """Run the tap in-process, as `tap-lms-unified --config ... --state ...` would."""
    stdout = io.StringIO()
    log_stream = io.StringIO()
    handler = logging.StreamHandler(log_stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(log_level)
    error: BaseException | None = None
    try:
        with contextlib.redirect_stdout(stdout):
            state = copy.deepcopy(state)  # the SDK updates the state it is given
            tap = TapLmsUnified(config=dict(config), state=state, catalog=catalog)
            if select is not None:
                wanted = set(select)
                for name, stream in tap.streams.items():
                    stream.selected = name in wanted
            if prepare is not None:
                prepare(tap)
            tap.sync_all()
    except Exception as exc:  # the tests decide whether an error was expected
        error = exc
        log_stream.write(f"\nERROR {type(exc).__name__}: {exc}\n")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    if error is not None and not expect_error:
        raise error
    # split on "\n" only: JSON does not escape U+2028 and friends inside strings
    messages = [json.loads(line) for line in stdout.getvalue().split("\n") if line.strip()]
    # Every record of every run matches its stream's SCHEMA message, keys present and unique.
    validate_singer_output(messages)
    return TapRun(messages=messages, log=log_stream.getvalue(), error=error)


def cli_command(config_file: Path, state_file: Path | None = None) -> list[str]:
    """The tap's real command line: `python -m tap_lms_unified --config ... [--state ...]`."""
    command = [sys.executable, "-m", "tap_lms_unified", "--config", str(config_file)]
    if state_file is not None:
        command += ["--state", str(state_file)]
    return command


def write_json(path: Path, data: t.Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def cli_env() -> dict[str, str]:
    """The environment of the tap's process: as in production (stdout buffered as the tap
    chooses; no warning filters of this test process)."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    env.pop("PYTHONWARNINGS", None)
    return env


@dataclass
class CliRun:
    """One run of `python -m tap_lms_unified`: exit code, parsed stdout, stderr."""

    returncode: int
    stdout_lines: list[str]
    stderr: str
    killed_after: int | None = None

    @cached_property
    def messages(self) -> list[dict]:
        """The Singer messages on stdout (one JSON document a line)."""
        return [json.loads(line) for line in self.stdout_lines if line.strip()]

    @property
    def stdout(self) -> str:
        return "\n".join(self.stdout_lines)

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    def records(self, stream: str) -> list[dict]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def count(self, kind: str) -> int:
        """How many messages of a type (RECORD, STATE, ...)."""
        return sum(1 for m in self.messages if m["type"] == kind)

    @property
    def text(self) -> str:
        return self.stdout + "\n" + self.stderr


def run_cli(
    config: dict,
    tmp_path: Path,
    *,
    state: dict | None = None,
    catalog: dict | None = None,
    args: t.Sequence[str] = (),
    timeout: float = 120,
    name: str = "run",
) -> CliRun:
    """Run the tap's CLI to completion (a sandbox keeps running in this process).

    `args` are appended (`--discover`, ...: their output is `.stdout`); the files are
    written to `tmp_path/<name>-*`.
    """
    config_file = write_json(tmp_path / f"{name}-config.json", config)
    state_file = None if state is None else write_json(tmp_path / f"{name}-state.json", state)
    command = cli_command(config_file, state_file)
    if catalog is not None:
        command += ["--catalog", str(write_json(tmp_path / f"{name}-catalog.json", catalog))]
    result = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=cli_env(),
    )
    run = CliRun(result.returncode, result.stdout.split("\n"), result.stderr)
    if not {"--discover", "--about", "--version", "--help"} & set(args):
        validate_cli_output(run)
    return run


def validate_cli_output(run: CliRun) -> None:
    """A CLI run's stdout, when it is Singer messages: every record against its SCHEMA."""
    try:
        messages = run.messages
    except json.JSONDecodeError:  # not a sync (usage errors, --test output, ...)
        return
    if all(isinstance(m, dict) and "type" in m for m in messages):
        validate_singer_output(messages)


#: The small sandbox most tests use: 60 legacy users x 3 progress, 12 courses, 8 skills;
#: Bindbee 40 users, 10 courses.
SMALL_SANDBOX: dict[str, t.Any] = {
    "seed": 7,
    "kombo_users": 60,
    "progress_per_user": 3,
    "kombo_courses": 12,
    "kombo_skills": 8,
    "bindbee_users": 40,
    "bindbee_courses": 10,
}


@pytest.fixture
def sandbox() -> t.Iterator[Sandbox]:
    """A small sandbox (SMALL_SANDBOX)."""
    with Sandbox(**SMALL_SANDBOX) as sb:
        yield sb


def kombo_tenants_config(sb: Sandbox, tenants: t.Iterable[str], **overrides: t.Any) -> dict:
    """Several Kombo integrations in one run (`integrations`)."""
    integrations = [{"integration_id": tenant} for tenant in tenants]
    return {
        "provider": "kombo",
        "api_key": SANDBOX_API_KEY,
        "api_url": sb.kombo_url,
        "integrations": integrations,
        **overrides,
    }


def bindbee_tenants_config(sb: Sandbox, tokens: t.Mapping[str, str], **overrides: t.Any) -> dict:
    """Several Bindbee connectors in one run (`integrations`, token → name)."""
    integrations = [{"connector_token": token, "name": name} for token, name in tokens.items()]
    return {
        "provider": "bindbee",
        "api_key": SANDBOX_API_KEY,
        "api_url": sb.bindbee_url,
        "integrations": integrations,
        **overrides,
    }


def kombo_config(sb: Sandbox, **overrides: t.Any) -> dict:
    config = {
        "provider": "kombo",
        "api_key": SANDBOX_API_KEY,
        "integration_id": KOMBO_TENANT,
        "api_url": sb.kombo_url,
        "page_size": 25,
        "max_retry_wait_seconds": 2,
    }
    config.update(overrides)
    return config


def bindbee_config(sb: Sandbox, **overrides: t.Any) -> dict:
    config = {
        "provider": "bindbee",
        "api_key": SANDBOX_API_KEY,
        "connector_token": BINDBEE_TOKEN,
        "connector_name": "acme",
        "api_url": sb.bindbee_url,
        "page_size": 15,
        "max_retry_wait_seconds": 2,
    }
    config.update(overrides)
    return config


def bookmark(state: dict, stream: str, tenant: str = KOMBO_TENANT) -> str | None:
    """The bookmark of one tenant (an SDK state partition) of a stream."""
    partitions = state["bookmarks"][stream].get("partitions", [])
    for partition in partitions:
        if tenant in partition["context"].values():
            return t.cast("str | None", partition.get("replication_key_value"))
    return None


def assert_unique_keys(run: TapRun, stream: str, keys: t.Sequence[str]) -> list[tuple]:
    """Every primary key non-null and unique across the whole output of a stream."""
    values = [tuple(r[k] for k in keys) for r in run.records(stream)]
    assert all(v is not None for key in values for v in key), f"{stream}: null key"
    duplicates = [k for k, n in Counter(values).items() if n > 1]
    assert not duplicates, f"{stream}: duplicate keys {duplicates[:5]}"
    return values

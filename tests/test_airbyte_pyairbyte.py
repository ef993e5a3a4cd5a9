"""A real Airbyte client, PyAirbyte, runs `source-lms-unified` against the sandbox.

PyAirbyte is heavy (about 180 packages, 780 MB) and conflicts with nothing only when it
lives alone: this module creates its own virtualenv `.venv-airbyte/` in the repository
root (gitignored; created once, about a minute, then reused while the stamp matches) and
runs tests/pyairbyte_script.py inside it, offline (`AIRBYTE_OFFLINE_MODE=1`,
`DO_NOT_TRACK=1`), with `local_executable` = this venv's `source-lms-unified`.

The script does, in one PyAirbyte process: check; a first read into a new local DuckDB
cache; a change of sandbox data through the admin API; a second read (incremental: PyAirbyte
passes back the state it kept in the cache); `read(force_full_refresh=True)`; a Bindbee
read; a read with a failing tenant. The tests below judge each step.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

from tap_lms_unified.sandbox import Fault, Sandbox
from tests.airbyte_utils import expected_kombo_counts
from tests.conftest import (
    BINDBEE_STREAMS,
    BINDBEE_TOKEN,
    KOMBO_STREAMS,
    KOMBO_TENANT,
    ROOT,
    SMALL_SANDBOX,
)
from tests.conftest import bindbee_config as bindbee_settings
from tests.conftest import kombo_config as kombo_settings

pytestmark = pytest.mark.pyairbyte

#: Newest PyAirbyte release; it needs Python >= 3.10, < 3.13.
PYAIRBYTE_SPEC = "airbyte==0.71.3"
VENV = ROOT / ".venv-airbyte"
SCRIPT = Path(__file__).with_name("pyairbyte_script.py")
FAILING_TENANT = "sandbox:globex"
TIMINGS: dict[str, float] = {}


def pyairbyte_python() -> Path:
    """The PyAirbyte venv's python, created (once, under a lock) when missing or stale."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".pyairbyte-stamp"
    want = f"{PYAIRBYTE_SPEC} python{sys.version_info.major}.{sys.version_info.minor}"
    lock_path = ROOT / ".venv-airbyte.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.exists() and stamp.read_text() == want:
            return python
        started = time.monotonic()
        shutil.rmtree(VENV, ignore_errors=True)
        log = ROOT / ".venv-airbyte.log"
        with log.open("w") as out:
            for command in (
                [sys.executable, "-m", "venv", str(VENV)],
                [str(python), "-m", "pip", "install", "--quiet", PYAIRBYTE_SPEC],
            ):
                done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
                if done.returncode != 0:
                    tail = log.read_text()[-3000:]
                    pytest.fail(f"creating {VENV.name} failed: {' '.join(command)}\n{tail}")
        stamp.write_text(want)
        TIMINGS["venv creation (first time)"] = time.monotonic() - started
        return python


@pytest.fixture(scope="module")
def pyairbyte(request, tmp_path_factory) -> t.Iterator[tuple[Sandbox, dict, dict]]:
    """(sandbox, expected Kombo counts before the change, the script's result)."""
    module_started = time.monotonic()
    python = pyairbyte_python()
    executable = Path(sys.executable).parent / "source-lms-unified"
    assert executable.exists(), "pip install -e . creates the console script"
    work = tmp_path_factory.mktemp("pyairbyte")
    with Sandbox(**SMALL_SANDBOX) as sandbox:
        expected = expected_kombo_counts(sandbox, [KOMBO_TENANT])
        sandbox.inject(
            Fault(provider="kombo", tenant=FAILING_TENANT, kind="status", status=503, times=None)
        )
        params = {
            "admin_url": sandbox.url + "/_sandbox/",
            "executable": str(executable),
            "cache_dir": str(work / "cache"),
            "kombo": kombo_settings(sandbox),
            "bindbee": bindbee_settings(sandbox),
            "mutation": {
                "provider": "kombo",
                "tenant": KOMBO_TENANT,
                "model": "users",
                "change": 4,
                "delete": 2,
            },
            "failing": kombo_settings(
                sandbox,
                integrations=[{"integration_id": FAILING_TENANT}],
                max_retries=1,
                max_retry_wait_seconds=0.1,
            ),
        }
        (work / "params.json").write_text(json.dumps(params))
        env = {
            **os.environ,
            "AIRBYTE_OFFLINE_MODE": "1",
            "DO_NOT_TRACK": "1",
            "AIRBYTE_LOGGING_ROOT": str(work / "logs"),
            "AIRBYTE_PROJECT_DIR": str(work),
            "PYTHONWARNINGS": "ignore",  # PyAirbyte's own deprecations are not ours to fix
        }
        started = time.monotonic()
        done = subprocess.run(
            [str(python), str(SCRIPT), str(work / "params.json"), str(work / "result.json")],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        TIMINGS["PyAirbyte script"] = time.monotonic() - started
        assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        result = json.loads((work / "result.json").read_text())
        yield sandbox, dict(expected), result
    TIMINGS["module"] = time.monotonic() - module_started
    _report(request, result)


def _report(request: pytest.FixtureRequest, result: dict) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    lines = [f"PyAirbyte {result['pyairbyte_version']}:"]
    lines += [f"  {name}: {seconds:.1f} s" for name, seconds in TIMINGS.items()]
    for step in ("first", "second", "full", "bindbee"):
        lines.append(f"  {step} read: {result[step]['read_counts']}")
    with capture.global_and_fixture_disabled():
        reporter.write_line("\n" + "\n".join(lines))


def kombo_requests(step: dict) -> list[dict]:
    return [r for r in step["requests"] if r["provider"] == "kombo"]


def test_first_read_caches_every_record(pyairbyte):
    _, expected, result = pyairbyte
    assert sorted(result["kombo_streams"]) == sorted(KOMBO_STREAMS)
    first = result["first"]
    assert first["read_counts"] == expected
    assert first["rows"] == expected
    assert first["processed_records"] == sum(expected.values())
    assert all("updated_after" not in r["params"] for r in kombo_requests(first))


def test_second_read_is_incremental(pyairbyte):
    _, expected, result = pyairbyte
    second, mutated = result["second"], result["mutated"]
    # fewer records read, at least every changed and deleted user
    assert second["processed_records"] < result["first"]["processed_records"]
    users = second["read_counts"]["users"]
    assert len(mutated["changed"]) + len(mutated["deleted"]) <= users < expected["users"]
    assert second["read_counts"]["progress"] == 3 * users
    # every request carried updated_after (from the state PyAirbyte passed back)
    requests = kombo_requests(second)
    assert requests
    assert all(r["params"].get("updated_after") for r in requests)
    # the cache merged on primary keys: still one row per record
    assert second["rows"] == expected
    assert second["rows_extracted_by_this_read"] == second["read_counts"]


def test_forced_full_refresh_reads_everything(pyairbyte):
    _, expected, result = pyairbyte
    full = result["full"]
    assert full["read_counts"] == expected
    assert full["rows"] == expected
    requests = kombo_requests(full)
    assert requests
    assert all("updated_after" not in r["params"] for r in requests)


def test_bindbee_read(pyairbyte):
    sandbox, _, result = pyairbyte
    expected = {s: len(sandbox.records("bindbee", BINDBEE_TOKEN, s)) for s in BINDBEE_STREAMS}
    assert result["bindbee"]["read_counts"] == expected
    assert result["bindbee"]["rows"] == expected


def test_a_failing_tenant_raises(pyairbyte):
    _, _, result = pyairbyte
    failing = result["failing"]
    assert failing["raised"] == "AirbyteConnectorFailedError"
    assert "Exit Code: 1" in failing["message"]
    traces = [json.loads(line[line.index("{") :]) for line in failing["traces"]]
    errors = [t["trace"]["error"] for t in traces if t["trace"]["type"] == "ERROR"]
    assert errors, failing["traces"]
    assert errors[0]["failure_type"] == "transient_error"
    assert errors[0]["message"].startswith(f"Tenant {FAILING_TENANT} failed on stream skills:")

"""The built wheel, installed into a fresh virtualenv and run from an empty directory.

Nothing of the repository is importable there: no PYTHONPATH, another cwd, the test
venv's bin off PATH. The wheel must carry the schemas, the console scripts and the
version (from pyproject.toml, read back through importlib.metadata: `--about` and the
User-Agent).
"""

from __future__ import annotations

import json
import signal
import subprocess
import tarfile
import threading
import time
import typing as t
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tap_lms_unified.sandbox import SANDBOX_API_KEY
from tests.conftest import BINDBEE_STREAMS, KOMBO_STREAMS, KOMBO_TENANT, ROOT
from tests.package_utils import VERSION, built_distributions, clean_env, wheel_venv

SCHEMA_FILES = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "tap_lms_unified" / "schemas").glob("*/*.json")
)
SCRIPTS = ("tap-lms-unified", "tap-lms-unified-sandbox", "source-lms-unified")


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    return built_distributions(tmp_path_factory)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, dists) -> Path:
    """The bin dir of a fresh venv holding only the wheel and its dependencies."""
    return wheel_venv(tmp_path_factory, dists[0])


class Runner:
    def __init__(self, bin_dir: Path, cwd: Path) -> None:
        self.bin_dir, self.cwd = bin_dir, cwd

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.cwd,
            env=clean_env(self.bin_dir),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
        return done


@pytest.fixture
def run(installed, tmp_path) -> Runner:
    return Runner(installed, tmp_path)


@pytest.fixture
def installed_sandbox(installed, tmp_path) -> t.Iterator[str]:
    """The sandbox started by the installed `tap-lms-unified-sandbox` console script."""
    ready = tmp_path / "sandbox-url"
    process = subprocess.Popen(
        [str(installed / "tap-lms-unified-sandbox"), "--port", "0", "--ready-file", str(ready)],
        cwd=tmp_path,
        env=clean_env(installed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.05)
        yield ready.read_text().strip()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)  # also closes the stderr pipe


def test_wheel_and_sdist_carry_schemas_scripts_and_version(dists):
    wheel, sdist = dists
    assert wheel.name == f"tap_lms_unified-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"tap_lms_unified-{VERSION}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert set(SCHEMA_FILES) <= names
    assert len(SCHEMA_FILES) == len(KOMBO_STREAMS) + len(BINDBEE_STREAMS)
    assert "tap_lms_unified/airbyte/cli.py" in names
    assert "tap_lms_unified/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]
    for script in SCRIPTS:
        assert f"{script} = " in entry_points
    assert f"\nVersion: {VERSION}\n" in metadata
    with tarfile.open(sdist) as archive:
        members = {m.split("/", 1)[1] for m in archive.getnames() if "/" in m}
    assert set(SCHEMA_FILES) <= members
    assert "pyproject.toml" in members


def test_installed_about_has_the_version_and_nothing_comes_from_the_repo(run):
    about = json.loads(run("tap-lms-unified", "--about", "--format", "json").stdout)
    assert about["name"] == "tap-lms-unified"
    assert about["version"] == VERSION
    assert {"provider", "api_key", "integration_id"} <= set(about["settings"]["properties"])
    where = run("python", "-c", "import tap_lms_unified; print(tap_lms_unified.__file__)")
    location = Path(where.stdout.strip())
    assert "site-packages" in location.parts
    assert not location.is_relative_to(ROOT)


def test_installed_tap_syncs_the_installed_sandbox(run, installed_sandbox, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "provider": "kombo",
                "api_key": SANDBOX_API_KEY,
                "integration_id": KOMBO_TENANT,
                "api_url": installed_sandbox + "/kombo/v1",
            }
        )
    )
    done = run("tap-lms-unified", "--config", str(config))
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    records = Counter(m["stream"] for m in messages if m["type"] == "RECORD")
    assert set(records) == set(KOMBO_STREAMS)
    assert records["users"] == 50  # the sandbox command's default
    assert records["progress"] == 150
    state = [m for m in messages if m["type"] == "STATE"][-1]["value"]
    assert set(state["bookmarks"]) == set(KOMBO_STREAMS)
    # and the Airbyte source of the same install
    spec = json.loads(run("source-lms-unified", "spec").stdout)
    assert spec["type"] == "SPEC"
    assert spec["spec"]["connectionSpecification"]["properties"]["api_key"]["airbyte_secret"]
    check = run("source-lms-unified", "check", "--config", str(config)).stdout.splitlines()
    status = [json.loads(line) for line in check if '"CONNECTION_STATUS"' in line]
    assert status[-1]["connectionStatus"]["status"] == "SUCCEEDED"


def test_user_agent_carries_the_version(run, tmp_path):
    """The installed tap's User-Agent, as a server sees it: tap-lms-unified/<version>."""
    agents: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            agents.append(self.headers.get("User-Agent", ""))
            body = b'{"status": "success", "data": {"next": null, "results": []}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: t.Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = tmp_path / "config.json"
        config.write_text(
            json.dumps(
                {
                    "provider": "kombo",
                    "api_key": SANDBOX_API_KEY,
                    "integration_id": KOMBO_TENANT,
                    "api_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
                }
            )
        )
        run("tap-lms-unified", "--config", str(config))
    finally:
        server.shutdown()
        server.server_close()
    assert agents
    assert set(agents) == {f"tap-lms-unified/{VERSION}"}

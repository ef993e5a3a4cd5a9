"""The container image: built by scripts/build-image with podman, run as Airbyte runs it.

The image is built once per module (a tag of its own, removed afterwards) from the working
tree; the base image (Debian bookworm by debootstrap) is made when the machine has none
(about 45 s). Then `spec` through the image's ENTRYPOINT, and `discover` and two `read`s
(the second from the first one's state) against the sandbox on the host's loopback
(`--network host`), the config and catalog mounted read-only as Airbyte mounts them. Every
message is validated with the protocol's own models. Needs podman, runc and debootstrap
(.ci/run installs them): without them the module fails, saying what to install.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import typing as t
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tap_lms_unified.sandbox import SANDBOX_API_KEY
from tests.airbyte_utils import expected_kombo_counts, parse
from tests.conftest import KOMBO_STREAMS, KOMBO_TENANT, ROOT, kombo_config

pytestmark = pytest.mark.container

BUILD = ROOT / "scripts" / "build-image"
#: What .ci/run installs; the module fails naming them when one is missing.
NEEDED = ("podman", "runc", "debootstrap")
TIMINGS: dict[str, float] = {}


def podman_flags() -> list[str]:
    """The flags scripts/build-image uses (PODMAN_FLAGS), for `podman run` too."""
    default = "--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
    return shlex.split(os.environ.get("PODMAN_FLAGS", default))


@pytest.fixture(scope="module")
def image(request) -> t.Iterator[str]:
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"the container tests need {', '.join(missing)}: "
            f"apt-get install {' '.join(NEEDED)} (.ci/run does)"
        )
    tag = f"localhost/source-lms-unified:test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    done = subprocess.run(
        [str(BUILD)],
        cwd=ROOT,
        env={**os.environ, "IMAGE": tag},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    TIMINGS["scripts/build-image"] = time.monotonic() - started
    assert done.returncode == 0, f"scripts/build-image failed:\n{done.stderr[-4000:]}"
    steps = [line for line in done.stderr.splitlines() if line.startswith("build-image:")]
    try:
        yield tag
    finally:
        subprocess.run(["podman", "rmi", "--force", tag], capture_output=True, check=False)
        _report(request, steps)


def _report(request: pytest.FixtureRequest, steps: list[str]) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    lines = ["Container:", *(f"  {line}" for line in steps)]
    lines += [f"  {name}: {seconds:.1f} s" for name, seconds in TIMINGS.items()]
    with capture.global_and_fixture_disabled():
        reporter.write_line("\n" + "\n".join(lines))


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["podman", *args], capture_output=True, timeout=timeout, check=False)


def tap_errors(stderr: str) -> list[str]:
    """Error lines of the source on stderr; podman's own notices (host-dependent) aside."""
    return [line for line in stderr.splitlines() if "Traceback" in line or "ERROR" in line]


def run_image(
    image: str, *args: str, mounts: Path | None = None, network: str = "none"
) -> tuple[int, list[dict], str]:
    """`podman run` the image's entrypoint; (exit code, validated messages, stderr)."""
    volume = ["-v", f"{mounts}:/secrets:ro"] if mounts is not None else []
    started = time.monotonic()
    done = podman(
        "run", "--rm", *podman_flags(), "--network", network, *volume, image, *args
    )  # fmt: skip
    TIMINGS[f"run {args[0]}"] = TIMINGS.get(f"run {args[0]}", 0) + time.monotonic() - started
    assert not done.stderr.startswith(b"Error:"), done.stderr.decode()
    return done.returncode, parse(done.stdout), done.stderr.decode()


def mounted(tmp_path: Path, **files: t.Any) -> Path:
    """A directory of JSON files the image's non-root user can read."""
    folder = tmp_path / "secrets"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    tmp_path.chmod(0o755)
    for name, content in files.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(content))
        path.chmod(0o644)
    return folder


def test_entrypoint_is_the_airbyte_source(image):
    done = podman("image", "inspect", image)
    assert done.returncode == 0, done.stderr.decode()
    (info,) = json.loads(done.stdout)
    config = info["Config"]
    assert config["Entrypoint"] == ["source-lms-unified"]
    assert "AIRBYTE_ENTRYPOINT=source-lms-unified" in config["Env"]
    assert config["User"] == "tap"
    assert config["Labels"]["io.airbyte.name"] == "source-lms-unified"


def test_spec_through_the_image(image):
    code, messages, stderr = run_image(image, "spec")
    assert (code, tap_errors(stderr)) == (0, [])
    assert [m["type"] for m in messages] == ["SPEC"]
    properties = messages[0]["spec"]["connectionSpecification"]["properties"]
    assert properties["api_key"]["airbyte_secret"] is True


def test_sandbox_read_through_the_image(image, sandbox, tmp_path):
    config = kombo_config(sandbox)
    folder = mounted(tmp_path, config=config)
    code, messages, stderr = run_image(
        image, "discover", "--config", "/secrets/config.json", mounts=folder
    )
    assert (code, tap_errors(stderr)) == (0, [])
    (catalog,) = [m["catalog"] for m in messages if m["type"] == "CATALOG"]
    assert {s["name"] for s in catalog["streams"]} == set(KOMBO_STREAMS)
    configured = {
        "streams": [
            {
                "stream": stream,
                "sync_mode": "incremental",
                "destination_sync_mode": "append_dedup",
                "cursor_field": stream["default_cursor_field"],
                "primary_key": stream["source_defined_primary_key"],
            }
            for stream in catalog["streams"]
        ]
    }
    mounted(tmp_path, catalog=configured)
    read = ("read", "--config", "/secrets/config.json", "--catalog", "/secrets/catalog.json")
    code, messages, stderr = run_image(image, *read, mounts=folder, network="host")
    assert (code, tap_errors(stderr)) == (0, []), [m for m in messages if m["type"] == "TRACE"][-3:]
    counts = Counter(m["record"]["stream"] for m in messages if m["type"] == "RECORD")
    assert counts == expected_kombo_counts(sandbox, [KOMBO_TENANT])
    statuses = [
        m["trace"]["stream_status"]["status"]
        for m in messages
        if m["type"] == "TRACE" and m["trace"]["type"] == "STREAM_STATUS"
    ]
    assert statuses.count("COMPLETE") == len(KOMBO_STREAMS)
    assert SANDBOX_API_KEY not in json.dumps(messages)

    # the state of the first read, as Airbyte passes it back: an incremental second read
    last = {
        m["state"]["stream"]["stream_descriptor"]["name"]: m["state"]
        for m in messages
        if m["type"] == "STATE"
    }
    assert set(last) == set(KOMBO_STREAMS)
    sandbox.mutate("kombo", KOMBO_TENANT, "users", change=3)
    sandbox.reset_requests()
    mounted(tmp_path, state=list(last.values()))
    code, messages, stderr = run_image(
        image, *read, "--state", "/secrets/state.json", mounts=folder, network="host"
    )
    assert (code, tap_errors(stderr)) == (0, [])
    users = [m for m in messages if m["type"] == "RECORD" and m["record"]["stream"] == "users"]
    assert 3 <= len(users) < counts["users"]
    assert sandbox.requests
    assert all(r.params.get("updated_after") for r in sandbox.requests)

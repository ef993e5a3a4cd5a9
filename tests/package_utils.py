"""The built distributions (wheel and sdist), once per test session, and a venv with the wheel.

`python -m build` runs in an isolated build environment (setuptools from the package
index); the results go to the session's temporary directory, shared by every module that
asks (package tests, Meltano Hub tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import tomllib
import typing as t
from pathlib import Path

import pytest

from tests.conftest import ROOT

if t.TYPE_CHECKING:
    from collections.abc import Iterator

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One holder at a time (modules of one session, or sessions in parallel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def built_distributions(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) of the working tree, built once per session."""
    out = factory.getbasetemp() / "dist"
    with _locked(factory.getbasetemp() / "dist.lock"):
        wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
        if not (wheels and sdists):
            done = subprocess.run(
                [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(
                    f"python -m build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                )
            wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    (wheel,), (sdist,) = wheels, sdists
    return wheel, sdist


def clean_env(bin_dir: Path | None = None) -> dict[str, str]:
    """The environment of a fresh shell: no PYTHONPATH, no virtualenv of the tests."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    path = env.get("PATH", "")
    # drop the test venv's bin from PATH so nothing resolves to the repository's install
    parts = [p for p in path.split(os.pathsep) if Path(p) != Path(sys.executable).parent]
    if bin_dir is not None:
        parts.insert(0, str(bin_dir))
    env["PATH"] = os.pathsep.join(parts)
    return env


def wheel_venv(factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtualenv with only the wheel (and its dependencies); returns its bin dir."""
    venv = factory.getbasetemp() / "wheel-venv"
    bin_dir = venv / "bin"
    with _locked(factory.getbasetemp() / "wheel-venv.lock"):
        if not (bin_dir / "tap-lms-unified").exists():
            for command in (
                [sys.executable, "-m", "venv", str(venv)],
                [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
            ):
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                    cwd=factory.getbasetemp(),
                    env=clean_env(),
                )
                if done.returncode != 0:
                    pytest.fail(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return bin_dir

"""A throwaway PostgreSQL cluster for end-to-end tests: `initdb` + `pg_ctl` in a temp dir.

The cluster listens on 127.0.0.1 only, on a free port, with its unix socket inside the
temp dir, trust authentication and durability switched off (it lives for one test run).
PostgreSQL refuses to run as root: when the tests run as root, initdb and pg_ctl run as
the `postgres` system user (created by Debian's `postgresql` package) via `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import typing as t
from pathlib import Path

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
SYSTEM_USER = "postgres"


class ClusterError(RuntimeError):
    """The cluster could not be set up; the message says why."""


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres.

    Looked for in `$PG_BINDIR`, `pg_config --bindir`, `/usr/lib/postgresql/*/bin` (newest
    first) and on PATH.
    """
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        candidates.append(Path(found))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in SERVER_BINARIES):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nothing found"
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; looked in: "
        f"{looked}. Install Debian's `postgresql` package (.ci/run does) or set PG_BINDIR."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One throwaway cluster. Use as a context manager, or call start() and stop()."""

    superuser = "postgres"
    host = "127.0.0.1"

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir
        self.root: Path | None = None
        self.port = 0
        self.running = False

    # -- paths -------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """initdb + pg_ctl start; raises ClusterError with the reason when it cannot."""
        self.bindir = self.bindir or find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="lms-pg-"))
        try:
            self.socket_dir.mkdir()
            self._hand_over_to_system_user()
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                "initdb",
            )
            self._start_server()
        except BaseException:
            self.stop()
            raise

    def _start_server(self) -> None:
        assert self.bindir is not None
        last = ""
        for _ in range(3):  # another process may take the free port before postgres binds it
            self.port = free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {self.port}",
                    f"-k {self.socket_dir}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=50",
                ]
            )
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-l",
                        str(self.log_file),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                    "pg_ctl start",
                )
            except ClusterError as exc:
                last = str(exc)
                if "could not bind" not in self.log_tail() and "in use" not in self.log_tail():
                    raise
                continue
            self.running = True
            return
        raise ClusterError(last)

    def stop(self) -> None:
        """Stop the server (fast) and remove the temp dir; safe to call twice."""
        if self.root is None:
            return
        try:
            if self.bindir is not None and (self.data_dir / "postmaster.pid").exists():
                pg_ctl = str(self.bindir / "pg_ctl")
                stop = [pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"]
                self._run(stop, "pg_ctl stop")
        finally:
            self.running = False
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # -- helpers -----------------------------------------------------------------------

    @property
    def as_system_user(self) -> bool:
        return os.geteuid() == 0

    def _hand_over_to_system_user(self) -> None:
        if not self.as_system_user:
            return
        assert self.root is not None
        try:
            user = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ClusterError(
                "running as root, and PostgreSQL refuses to run as root, but there is no "
                f"'{SYSTEM_USER}' system user to run it as (Debian's `postgresql` package "
                "creates it)"
            ) from None
        if not shutil.which("runuser"):
            raise ClusterError("running as root but `runuser` (util-linux) is missing")
        for path in (self.root, self.socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run(self, argv: list[str], what: str) -> None:
        if self.as_system_user:
            argv = ["runuser", "-u", SYSTEM_USER, "--", *argv]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ClusterError(f"{what} could not run: {exc}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()[-2000:]
            raise ClusterError(
                f"{what} failed (exit {done.returncode}): {output}\n--- server log ---\n"
                f"{self.log_tail()}"
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no server log)"

    # -- connecting --------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.superuser} dbname={dbname}"

    def connect(self, dbname: str = "postgres") -> t.Any:
        """A psycopg 3 connection in autocommit mode."""
        import psycopg

        return psycopg.connect(self.conninfo(dbname), autocommit=True)

    def create_database(self, name: str) -> None:
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def target_env(self, dbname: str) -> dict[str, str]:
        """Meltano env vars that point target-postgres at database `dbname` here."""
        return {
            "TARGET_POSTGRES_HOST": self.host,
            "TARGET_POSTGRES_PORT": str(self.port),
            "TARGET_POSTGRES_USER": self.superuser,
            "TARGET_POSTGRES_PASSWORD": "",
            "TARGET_POSTGRES_DATABASE": dbname,
        }

"""A scriptable, misbehaving HTTP API for tests, and a runner of the tap's real CLI.

`HostileServer` is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (port 0, optionally TLS)
with a route table: path -> handler. A handler gets an `Exchange` (the request, recorded,
plus ways to answer) and may answer properly (`paged`: Kombo or Bindbee envelope pages
behind cursors) or misbehave (redirects, trickled headers or bodies, endless chunked
bodies, gzip bombs, 429s, ...). Every request is recorded (path, query, headers, time).

The tap is only ever run as a subprocess through its CLI (`TapProcess`, `run_tap`): the
config settings, the catalog, the state and the Singer output are the whole interface,
so nothing here depends on how the package is laid out inside.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import zlib
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent

# ====================================================================== the server


@dataclass
class Request:
    """One request as it arrived."""

    server: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]  # lower-case names
    time: float  # time.monotonic()


class Exchange:
    """One request and the means to answer it, well or badly."""

    def __init__(self, handler: _Handler, server: HostileServer, request: Request) -> None:
        self.handler = handler
        self.server = server
        self.request = request

    # -- well-formed answers
    def send(
        self,
        body: bytes,
        status: int = 200,
        headers: t.Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        h = self.handler
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        self.write(body)

    def json(
        self, body: t.Any, status: int = 200, headers: t.Mapping[str, str] | None = None
    ) -> None:
        self.send(dump(body), status, headers)

    # -- raw answers: the connection is closed after them
    def head(self, status: int = 200, headers: t.Mapping[str, str] | None = None) -> None:
        """Status line and headers only; the body is up to the caller."""
        h = self.handler
        h.close_connection = True
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Connection", "close")
        h.end_headers()

    def write(self, data: bytes) -> bool:
        """Write bytes as they are; False once the client has gone."""
        try:
            self.handler.wfile.write(data)
            self.handler.wfile.flush()
        except OSError:
            self.handler.close_connection = True
            return False
        return True

    def chunk(self, data: bytes) -> bool:
        return self.write(b"%x\r\n%s\r\n" % (len(data), data))

    def pause(self, seconds: float) -> bool:
        """Sleep; False when the server is stopping (misbehaviour must end then)."""
        return not self.server.stopping.wait(seconds)


Handler = t.Callable[[Exchange], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 20  # a client that connects and says nothing does not keep a thread
    server: _Server

    def do_GET(self) -> None:
        self.server.owner.dispatch(self)

    def log_message(self, format: str, *args: t.Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    owner: HostileServer
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[t.Any, t.Any]:
        request, address = super().get_request()
        if self.tls is not None:  # wrapped here (socketserver closes it), shaken hands later
            request = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        return request, address

    def finish_request(self, request: t.Any, client_address: t.Any) -> None:
        if self.tls is not None:  # the handshake in the handler thread, not the accept loop
            try:
                request.do_handshake()
            except OSError:  # the client refused our certificate: nothing to serve
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        pass  # a client hanging up on a misbehaving answer is expected


class HostileServer:
    """`routes[path] = handler`; everything else is a 404 in the Kombo error shape."""

    def __init__(self, name: str = "api", *, cert: tuple[Path, Path] | None = None) -> None:
        self.name = name
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            self._httpd.tls = context
        self.scheme = "https" if cert else "http"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=name
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The origin, e.g. http://127.0.0.1:PORT."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def route(self, path: str, handler: Handler) -> HostileServer:
        self.routes[path] = handler
        return self

    def hits(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def dispatch(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in h.headers.items()}
        request = Request(self.name, parts.path, query, parts.query, headers, time.monotonic())
        with self._lock:
            self.requests.append(request)
        handler = self.routes.get(parts.path, not_found)
        handler(Exchange(h, self, request))

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # ends every trickle and endless body
        self._httpd.shutdown()
        self._thread.join(10)
        self._httpd.server_close()  # joins the handler threads


# ====================================================================== JSON bodies


class Raw:
    """A JSON token written as is (`1e400`), which json.dumps cannot produce."""

    def __init__(self, token: str) -> None:
        self.token = token


def dump(body: t.Any) -> bytes:
    """JSON bytes of `body`; `Raw` values are written verbatim, lone surrogates escaped."""
    if isinstance(body, bytes):
        return body
    raws: list[str] = []

    def placeholder(value: t.Any) -> str:
        if isinstance(value, Raw):
            raws.append(value.token)
            return f"@@raw{len(raws) - 1}@@"
        raise TypeError(type(value).__name__)

    text = json.dumps(body, default=placeholder)  # ensure_ascii: "\ud83d" stays an escape
    for i, token in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', token)
    return text.encode("ascii")


def kombo_page(results: list, cursor: str | None) -> dict:
    return {"status": "success", "data": {"next": cursor, "results": results}}


def bindbee_page(items: list, cursor: str | None) -> dict:
    return {"cursor": cursor, "page_size": len(items), "items": items}


def envelope(provider: str, records: list, cursor: str | None) -> dict:
    return kombo_page(records, cursor) if provider == "kombo" else bindbee_page(records, cursor)


# ====================================================================== behaviours


def not_found(ex: Exchange) -> None:
    ex.json({"status": "error", "error": {"code": "NOT_FOUND", "message": "no route"}}, 404)


def empty(provider: str) -> Handler:
    """One empty last page."""
    return lambda ex: ex.json(envelope(provider, [], None))


def paged(
    provider: str, pages: t.Sequence[list] | t.Callable[[int], list | None], prefix: str = "p"
) -> Handler:
    """Pages behind cursors `p1`, `p2`, ...: a list of pages, or `page(i)` (None: no such
    page; the page before it is the last)."""

    def page(i: int) -> list | None:
        if callable(pages):
            return pages(i)
        return list(pages[i]) if i < len(pages) else None

    def handle(ex: Exchange) -> None:
        cursor = ex.request.query.get("cursor")
        i = int(cursor[len(prefix) :]) if cursor else 0
        records = page(i)
        if records is None:
            ex.json({"detail": f"unknown cursor {cursor}"}, 400)
            return
        following = f"{prefix}{i + 1}" if page(i + 1) is not None else None
        ex.json(envelope(provider, records, following))

    return handle


def by_header(header: str, handlers: t.Mapping[str, Handler]) -> Handler:
    """Dispatch on a tenant header (X-Integration-Id / x-connector-token)."""
    return lambda ex: handlers.get(ex.request.headers.get(header.lower(), ""), not_found)(ex)


def in_turn(*handlers: Handler) -> Handler:
    """The n-th request gets the n-th handler; the last one answers all later requests."""
    count = [0]
    lock = threading.Lock()

    def handle(ex: Exchange) -> None:
        with lock:
            n = count[0]
            count[0] += 1
        handlers[min(n, len(handlers) - 1)](ex)

    return handle


def status(code: int, body: t.Any = None, headers: t.Mapping[str, str] | None = None) -> Handler:
    return lambda ex: ex.json(
        body if body is not None else {"detail": f"HTTP {code}"}, code, headers
    )


def redirect(origin_or_prefix: str, code: int = 302) -> Handler:
    """Redirect to the same path and query under another origin or path prefix."""

    def handle(ex: Exchange) -> None:
        query = f"?{ex.request.raw_query}" if ex.request.raw_query else ""
        location = f"{origin_or_prefix}{ex.request.path}{query}"
        ex.send(b"", code, {"Location": location})

    return handle


def trickle_body(interval: float = 2.0) -> Handler:
    """Headers at once (Content-Length 1000), then one body byte every `interval`."""

    def handle(ex: Exchange) -> None:
        ex.head(200, {"Content-Type": "application/json", "Content-Length": "1000"})
        while ex.pause(interval) and ex.write(b" "):
            pass

    return handle


def trickle_headers(interval: float = 2.0) -> Handler:
    """A status line, then one byte of a header every `interval`: headers never end."""

    def handle(ex: Exchange) -> None:
        ex.handler.close_connection = True
        if ex.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: "):
            while ex.pause(interval) and ex.write(b"z"):
                pass

    return handle


def slow_chunked(interval: float = 2.0) -> Handler:
    """A chunked body that never ends: a one-space chunk every `interval`."""

    def handle(ex: Exchange) -> None:
        ex.head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        while ex.pause(interval) and ex.chunk(b" "):
            pass

    return handle


def endless_chunked(cap: int = 8 << 30) -> Handler:
    """A chunked body as fast as the client reads, up to `cap` bytes (a safety net only)."""
    block = b" " * (256 << 10)

    def handle(ex: Exchange) -> None:
        ex.head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        sent = 0
        while sent < cap and not ex.server.stopping.is_set() and ex.chunk(block):
            sent += len(block)

    return handle


@cache
def _bomb_parts(provider: str) -> tuple[bytes, bytes, bytes]:
    """(gzip header + deflated prefix, one deflated 1 MiB block of "0", deflated suffix).

    Blocks end with a full flush, so each block compresses to the same bytes and a
    multi-GB body is streamed from three short strings.
    """
    opening = b'{"status":"success","data":{"next":null,"results":[{"id":"'
    if provider == "bindbee":
        opening = b'{"cursor":null,"page_size":1,"items":[{"id":"'
    closing = b'"}]}}' if provider == "kombo" else b'"}]}'
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    head += deflate.compress(opening) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(b"0" * (1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    # The trailer's CRC is not computed (nobody should decompress that far): zero.
    tail = deflate.compress(closing) + deflate.flush() + struct.pack("<II", 0, 0)
    return head, block, tail


def gzip_bomb(provider: str, gib: int = 4) -> Handler:
    """`Content-Encoding: gzip`, ~4 MB on the wire, `gib` GiB of one JSON string inside."""

    def handle(ex: Exchange) -> None:
        head, block, tail = _bomb_parts(provider)
        blocks = gib << 10
        size = len(head) + blocks * len(block) + len(tail)
        ex.head(
            200,
            {
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "Content-Length": str(size),
            },
        )
        if not ex.write(head):
            return
        for _ in range(blocks):
            if ex.server.stopping.is_set() or not ex.write(block):
                return
        ex.write(tail)

    return handle


# ====================================================================== records


def kombo_user(key: str, **overrides: t.Any) -> dict:
    """A minimal Kombo user, valid against the tap's users schema."""
    user: dict[str, t.Any] = {
        "id": key,
        "remote_id": f"remote-{key}",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "work_email": f"{key}@example.com",
        "status": "ACTIVE",
        "remote_created_at": "2024-01-01T10:00:00.000Z",
        "remote_deleted_at": None,
        "changed_at": "2024-01-02T10:00:00.000Z",
        "remote_data": None,
        "custom_fields": {},
        "integration_fields": [],
    }
    user.update(overrides)
    return user


def kombo_progress(key: str, **overrides: t.Any) -> dict:
    """One item of a legacy user's `progress` list."""
    item: dict[str, t.Any] = {
        "progress_id": key,
        "course_id": "course-1",
        "status": "COMPLETED",
        "enrollment_date": "2024-01-01T10:00:00.000Z",
        "completion_date": "2024-01-03T10:00:00.000Z",
        "score": 87.5,
        "duration": 3600,
        "comments": None,
    }
    item.update(overrides)
    return item


def bindbee_user(key: str, **overrides: t.Any) -> dict:
    user: dict[str, t.Any] = {
        "id": key,
        "remote_id": f"remote-{key}",
        "modified_at": "2024-01-02T10:00:00.000Z",
        "custom_fields": {},
        "first_name": "Ada",
        "last_name": "Lovelace",
        "middle_name": None,
        "email_address": f"{key}@example.com",
        "phone_number": None,
        "status": "ACTIVE",
    }
    user.update(overrides)
    return user


def bindbee_completion(key: str, **overrides: t.Any) -> dict:
    completion: dict[str, t.Any] = {
        "id": key,
        "remote_id": f"remote-{key}",
        "modified_at": "2024-01-02T10:00:00.000Z",
        "custom_fields": {},
        "user": "user-1",
        "course": "course-1",
        "content": None,
        "started_at": "2024-01-01T10:00:00.000Z",
        "completed_at": "2024-01-03T10:00:00.000Z",
        "score": 87,
        "grade": "A",
        "time_duration": "PT1H",
    }
    completion.update(overrides)
    return completion


def users(provider: str, prefix: str, n: int) -> list[dict]:
    make = kombo_user if provider == "kombo" else bindbee_user
    return [make(f"{prefix}{i}") for i in range(n)]


# ====================================================================== provider settings

#: The server path of each stream's endpoint (Kombo's api_url ends in /v1).
PATHS = {
    "kombo": {
        "users": "/v1/lms/users",
        "progress": "/v1/lms/users",
        "course_progressions": "/v1/lms/course-progressions",
        "courses": "/v1/lms/courses",
        "course_revisions": "/v1/lms/courses",
        "skills": "/v1/lms/skills",
    },
    "bindbee": {
        s: f"/api/lms/v1/{s}"
        for s in ("users", "enrollments", "completions", "courses", "contents", "skills")
    }
    | {"categories": "/api/lms/v1/categories"},
}
#: The endpoint as the tap names it in errors.
ENDPOINT = {
    "kombo": {s: "GET " + p.removeprefix("/v1") for s, p in PATHS["kombo"].items()},
    "bindbee": {s: f"GET {p}" for s, p in PATHS["bindbee"].items()},
}
API_KEY = "hostile-api-key-0123456789"
TENANT_HEADER = {"kombo": "x-integration-id", "bindbee": "x-connector-token"}


def api_url(provider: str, origin: str) -> str:
    return f"{origin}/v1" if provider == "kombo" else origin


def config(provider: str, origin: str, **overrides: t.Any) -> dict:
    """One tenant (Kombo `acme:1`, Bindbee token `token-acme-secret`, name `acme`)."""
    settings: dict[str, t.Any] = {
        "provider": provider,
        "api_key": API_KEY,
        "api_url": api_url(provider, origin),
        "request_timeout": 5,
        "max_retries": 1,
        "max_retry_wait_seconds": 0.5,
    }
    if provider == "kombo":
        settings["integration_id"] = "acme:1"
    else:
        settings |= {"connector_token": "token-acme-secret", "connector_name": "acme"}
    settings.update(overrides)
    return settings


# ====================================================================== the tap's CLI


def cli_env(**extra: str) -> dict[str, str]:
    """The tap's environment: this one, without test-only settings or CA overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONUNBUFFERED", "PYTHONWARNINGS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"}
        and not k.startswith("TAP_LMS_UNIFIED")
    }
    env.update(extra)
    return env


def command(
    config_file: Path, catalog_file: Path | None = None, state_file: Path | None = None
) -> list[str]:
    cmd = [sys.executable, "-m", "tap_lms_unified", "--config", str(config_file)]
    if state_file is not None:
        cmd += ["--state", str(state_file)]
    if catalog_file is not None:
        cmd += ["--catalog", str(catalog_file)]
    return cmd


@cache
def discovered(provider: str) -> str:
    """The tap's own catalog (`--discover`, no request is made), as JSON text."""
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(config(provider, "http://127.0.0.1:9")))
        out = subprocess.run(
            [*command(config_file), "--discover"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=ROOT,
            env=cli_env(),
        )
    return out.stdout


def catalog(provider: str, select: t.Iterable[str], full_table: t.Iterable[str] = ()) -> dict:
    """The discovered catalog with only `select` selected; `full_table` streams get
    `forced-replication-method: FULL_TABLE` and `replication_method: FULL_TABLE` (the
    SDK prefers the entry's `replication_method`, INCREMENTAL as discovered, over the
    metadata: forcing through the metadata alone is silently ignored)."""
    wanted, forced = set(select), set(full_table)
    data = json.loads(discovered(provider))
    for entry in data["streams"]:
        if entry["tap_stream_id"] in forced:
            entry["replication_method"] = "FULL_TABLE"
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in wanted
                if entry["tap_stream_id"] in forced:
                    item["metadata"]["forced-replication-method"] = "FULL_TABLE"
    return data


def parse_lines(data: bytes) -> list[dict]:
    """Singer messages, one per line (split on \\n only: JSON keeps U+2028 raw)."""
    return [json.loads(line) for line in data.split(b"\n") if line.strip()]


@dataclass
class TapRun:
    """What one CLI run did: exit code, time, output, peak memory."""

    returncode: int | None  # None: still running when the hard timeout fired
    seconds: float
    stdout: bytes
    stderr: str
    peak_rss_mb: float
    timed_out: bool = False
    rss_killed: bool = False  # killed by the runner for going over rss_limit_mb
    messages: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        data = self.stdout
        if self.timed_out or self.rss_killed:  # a line cut by our SIGKILL is not the tap's
            data = data[: data.rfind(b"\n") + 1]
        self.messages = parse_lines(data)

    def records(self, stream: str) -> list[dict]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr

    def describe(self) -> str:
        """For assertion messages: how the run ended and the end of its log."""
        end = "TIMED OUT" if self.timed_out else f"exit {self.returncode}"
        if self.rss_killed:
            end = "KILLED (RSS limit)"
        tail = "\n".join(self.stderr.strip().splitlines()[-6:])
        return f"{end} after {self.seconds:.1f} s, peak RSS {self.peak_rss_mb:.0f} MB\n{tail}"


def _status_kb(pid: int, name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


class TapProcess:
    """The tap's CLI in a subprocess, watched by a thread: a hard timeout, an optional RSS
    limit (SIGKILL beyond it, to protect the machine), peak RSS from /proc (VmHWM)."""

    def __init__(
        self,
        tmp_path: Path,
        settings: dict,
        *,
        catalog: dict | None = None,
        state: dict | None = None,
        timeout: float = 60,
        rss_limit_mb: float | None = None,
        env: t.Mapping[str, str] | None = None,
        name: str = "run",
    ) -> None:
        self.dir = tmp_path / name
        self.dir.mkdir(parents=True, exist_ok=True)
        files = {"config": settings, "catalog": catalog, "state": state}
        paths = {}
        for kind, data in files.items():
            if data is not None:
                paths[kind] = self.dir / f"{kind}.json"
                paths[kind].write_text(json.dumps(data))
        self.cmd = command(paths["config"], paths.get("catalog"), paths.get("state"))
        self.timeout = timeout
        self.rss_limit_mb = rss_limit_mb
        self.env = dict(env) if env is not None else cli_env()
        self.peak_kb = 0
        self.timed_out = self.rss_killed = False
        self._result: TapRun | None = None

    def start(self) -> TapProcess:
        self._out = (self.dir / "stdout").open("wb")
        self._err = (self.dir / "stderr").open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._out, stderr=self._err, cwd=ROOT, env=self.env
        )
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        proc = self.proc
        while proc.poll() is None:
            self.peak_kb = max(self.peak_kb, _status_kb(proc.pid, "VmHWM"))
            if self.rss_limit_mb and _status_kb(proc.pid, "VmRSS") > self.rss_limit_mb * 1024:
                self.rss_killed = True
                proc.kill()
            elif time.monotonic() - self.started > self.timeout:
                self.timed_out = True
                proc.kill()
            time.sleep(0.02)
        self.seconds = time.monotonic() - self.started

    def wait(self) -> TapRun:
        if self._result is None:
            self._watcher.join()
            self.proc.wait()
            self._out.close()
            self._err.close()
            code = None if self.timed_out else self.proc.returncode
            self._result = TapRun(
                returncode=code,
                seconds=self.seconds,
                stdout=(self.dir / "stdout").read_bytes(),
                stderr=(self.dir / "stderr").read_text(errors="replace"),
                peak_rss_mb=self.peak_kb / 1024,
                timed_out=self.timed_out,
                rss_killed=self.rss_killed,
            )
        return self._result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)


def run_tap(tmp_path: Path, settings: dict, **kwargs: t.Any) -> TapRun:
    """Run the CLI to its end (or the hard timeout)."""
    return TapProcess(tmp_path, settings, **kwargs).start().wait()

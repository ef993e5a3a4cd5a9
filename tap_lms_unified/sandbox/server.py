"""HTTP server of the sandbox: routing, faults, latency, request log, admin endpoints.

Provider-neutral: every provider's fake comes from :mod:`.providers` and is mounted at
its URL prefix; its settings are ``<provider>_<field>`` keyword arguments (see
:mod:`.options`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Unpack
from urllib.parse import parse_qsl, urlsplit

from tap_lms_unified.sandbox.fake import ProviderFake, Record
from tap_lms_unified.sandbox.faults import HTML_ERROR_PAGE, SHORT_CIRCUIT, Fault, FaultSet
from tap_lms_unified.sandbox.options import Options, split_settings
from tap_lms_unified.sandbox.providers import PROVIDERS, Settings
from tap_lms_unified.sandbox.wire import (
    ApiRequest,
    RequestLog,
    Response,
    encode_json,
    json_response,
)

ADMIN_PREFIX = "/_sandbox/"
_QUIET_ERRORS = (ConnectionError, TimeoutError, OSError)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Sandbox:
    """Imitation of every registered provider's API on ``http://127.0.0.1:<port>``.

    Use as a context manager (``with Sandbox(...) as sb``) or call :meth:`start` /
    :meth:`stop`.  The constructor only records the configuration; data is generated
    lazily per tenant and model on first use.  ``settings`` are the providers' sizes and
    options, named ``<provider>_<field>`` (e.g. ``<provider>_users=5``), and
    ``sb.<provider>_url`` is a provider's base URL.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        latency_ms: float = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
        **settings: Unpack[Settings],
    ) -> None:
        if not is_loopback(host):
            raise ValueError(f"the sandbox only binds to loopback addresses, not {host!r}")
        self.host = host
        self.port = port
        self.verbose = verbose
        self.seed = seed
        sizes, options = split_settings(settings)
        self.options = Options()
        self.options.update({"latency_ms": latency_ms, **options})
        self.fakes: dict[str, ProviderFake[Any, Any, Any]] = {
            p.name: p(seed, p.sizes_type(**sizes[p.name]), self.options.of(p.name))
            for p in PROVIDERS
        }
        self.faults = FaultSet()
        self._log: list[RequestLog] = []
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.sandbox = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = f"lms-sandbox-{self.port_bound}"
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join()
        server.close_connections()
        server.server_close()
        self._server = None
        self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port_bound(self) -> int:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() or use `with`")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port_bound}"

    def url_of(self, provider: str) -> str:
        """The base URL of a provider's fake: the sandbox's URL and the fake's prefix."""
        return self.url + self.fake(provider).prefix

    def __getattr__(self, attr: str) -> str:
        """``sb.<provider>_url`` is ``sb.url_of("<provider>")``."""
        provider = attr.removesuffix("_url")
        if provider != attr and any(p.name == provider for p in PROVIDERS):
            return self.url_of(provider)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    # --- data -------------------------------------------------------------------------
    def fake(self, provider: str) -> ProviderFake[Any, Any, Any]:
        try:
            return self.fakes[provider]
        except KeyError:
            raise ValueError(f"unknown provider {provider!r}") from None

    def records(self, provider: str, tenant: str, model: str) -> list[Record]:
        """Deep copies of the stored records, as the API would serve them (see the fakes)."""
        return self.fake(provider).records(tenant, model)

    def mutate(
        self, provider: str, tenant: str, model: str, change: int = 0, delete: int = 0
    ) -> dict[str, list[str]]:
        """Change and/or delete records (chosen deterministically); returns their ids."""
        if change < 0 or delete < 0:
            raise ValueError("change and delete must be >= 0")
        return self.fake(provider).mutate(tenant, model, change, delete)

    def set_fields(
        self, provider: str, tenant: str, model: str, ids: list[str], fields: dict[str, Any]
    ) -> None:
        """Give records (by id) new field values, e.g. ``{"remote_data": None}``, as a change."""
        self.fake(provider).set_fields(tenant, model, ids, fields)

    # --- faults, options, request log ---------------------------------------------------
    def inject(self, fault: Fault | Mapping[str, Any]) -> Fault:
        f = fault if isinstance(fault, Fault) else Fault.from_dict(fault)
        self.faults.add(f)
        return f

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_option(self, **options: Any) -> None:
        """Set runtime options (``latency_ms`` or ``<provider>_<field>``, see :mod:`.options`)."""
        for provider, fields in self.options.update(options).items():
            if provider is not None:
                self.fakes[provider].options_changed(fields)

    @property
    def requests(self) -> list[RequestLog]:
        with self._log_lock:
            return list(self._log)

    def reset_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    # --- request handling ------------------------------------------------------------------
    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        split = urlsplit(target)
        path = split.path
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if path.startswith(ADMIN_PREFIX):
            return self._admin(method, path[len(ADMIN_PREFIX) :], params, body)
        for name, fake in self.fakes.items():
            prefix = fake.prefix
            if path == prefix or path.startswith(prefix + "/"):
                if method != "GET":
                    return json_response(405, {"detail": "Method Not Allowed"})
                req = ApiRequest(name, path[len(prefix) :] or "/", params, headers)
                return self._api(fake, req)
        return json_response(404, {"detail": "Not Found"})

    def _api(self, fake: ProviderFake[Any, Any, Any], req: ApiRequest) -> Response:
        tenant, identities = fake.identify(req)
        fault = self.faults.take(req.provider, req.path, identities)
        kind = fault.kind if fault else None
        if fault is not None and fault.kind == "delay":
            self._sleep(fault.seconds)
        started = time.monotonic()
        if fault is not None and fault.kind in SHORT_CIRCUIT:
            resp = _fault_response(fake, fault)
        else:
            resp = fake.handle(req, kind)
            if fault is not None and resp.status == 200:
                if fault.kind == "truncate":
                    resp.body = resp.body[: len(resp.body) // 2]
                elif fault.kind == "reset":
                    resp.cut_at = len(resp.body) // 2
        # The API's latency: an answer takes `latency_ms` from its request, or as long as
        # the sandbox took to render it if that was longer (rendering is part of it).
        self._sleep(self.options.latency_ms / 1000 - (time.monotonic() - started))
        entry = RequestLog(
            req.provider, tenant, req.path, req.params, resp.status, kind, time.time()
        )
        with self._log_lock:
            self._log.append(entry)
        return resp

    def _admin(self, method: str, name: str, params: dict[str, str], body: bytes) -> Response:
        try:
            payload = json.loads(body) if body.strip() else {}
            result = self._admin_call(method, name, params, payload)
        except (ValueError, KeyError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        if result is None:
            return json_response(404, {"error": f"no admin endpoint {method} /_sandbox/{name}"})
        return json_response(200, result)

    def _admin_call(
        self, method: str, name: str, params: dict[str, str], payload: Any
    ) -> dict[str, Any] | None:
        if method == "GET" and name == "health":
            return {"ok": True}
        if method == "GET" and name == "records":
            return {"records": self.records(params["provider"], params["tenant"], params["model"])}
        if method == "GET" and name == "requests":
            return {"requests": [asdict(e) for e in self.requests]}
        if method == "GET" and name == "options":
            return {"options": self.options.public()}
        if method != "POST":
            return None
        if name == "mutate":
            return self.mutate(
                payload["provider"],
                payload["tenant"],
                payload["model"],
                change=int(payload.get("change", 0)),
                delete=int(payload.get("delete", 0)),
            )
        if name == "requests/reset":
            self.reset_requests()
            return {"ok": True}
        if name == "faults":
            items = payload if isinstance(payload, list) else [payload]
            faults = [Fault.from_dict(item) for item in items]
            for f in faults:
                self.inject(f)
            return {"ok": True, "added": len(faults)}
        if name == "faults/clear":
            self.clear_faults()
            return {"ok": True}
        if name == "options":
            if not isinstance(payload, dict):
                raise ValueError("options must be a JSON object")
            self.set_option(**payload)
            return {"ok": True, "options": self.options.public()}
        return None


def _fault_response(fake: ProviderFake[Any, Any, Any], fault: Fault) -> Response:
    if fault.kind == "html200":
        return Response(200, HTML_ERROR_PAGE, content_type="text/html; charset=utf-8")
    if fault.kind == "bad_envelope":
        return fake.bad_envelope()
    status = fault.status or 500
    if fault.body is not None:
        if isinstance(fault.body, str):
            resp = Response(status, fault.body.encode(), content_type="text/plain")
        else:
            resp = json_response(status, fault.body)
    else:
        resp = fake.default_error(status, fault.code)
    resp.headers.update(fault.headers or {})
    return resp


class _Server(ThreadingHTTPServer):
    """Tracks its connections and worker threads so :meth:`Sandbox.stop` can end them."""

    daemon_threads = True
    sandbox: Sandbox

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._conn_lock:
            self._connections.add(request)
            self._workers.add(worker)
        worker.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._connections.discard(request)
                self._workers.discard(threading.current_thread())

    def close_connections(self) -> None:
        """Shut down open (keep-alive) connections and wait for their workers."""
        with self._conn_lock:
            connections = list(self._connections)
            workers = list(self._workers)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(timeout=10)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _QUIET_ERRORS):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server
    timeout = 300  # idle keep-alive connections are closed after this many seconds

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            resp = self.server.sandbox.dispatch(method, self.path, headers, body)
        except Exception as exc:  # keep serving; report the bug to the client
            resp = json_response(500, {"detail": f"sandbox error: {exc!r}"})
            self.log_error("sandbox error: %r", exc)
        self._send(resp)

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if resp.cut_at is None:
            self.wfile.write(resp.body)
            return
        # "reset" fault: part of the body, then abort (RST) instead of a clean close
        self.wfile.write(resp.body[: resp.cut_at])
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.verbose:
            super().log_message(format, *args)


__all__ = ["Sandbox", "encode_json", "is_loopback"]

"""HTTP: each tenant's rate budget and session, and the waits the provider asks for.

A response is read whole within `request_timeout` (connect to last byte) and up to
`max_response_bytes` (decoded): a watchdog thread shuts the socket of a request that
outlives its deadline, however slowly the server trickles headers or body. TLS trusts
the CA bundles of the environment (REQUESTS_CA_BUNDLE, SSL_CERT_FILE, ...).
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import http.cookiejar
import itertools
import os
import socket
import ssl
import threading
import time
import typing as t
from datetime import UTC, datetime
from urllib.parse import urlparse

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, resolve_proxies
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_ import create_urllib3_context

if t.TYPE_CHECKING:
    import logging

    from tap_lms_unified.provider import RateLimitHeaders


class Reachability:
    """Whether the API's origin has answered once in this run: until then, a refused
    connection or an unknown host is a wrong `api_url` (said at once, not retried for
    half a minute); after that, a refused connection is a hiccup, retried."""

    def __init__(self) -> None:
        self.answered = threading.Event()


class RateBudget:
    """Keeps one tenant under its request budget, proactively and from the API's headers.

    It is shared by every walk of the tenant: every endpoint draws on the same budget.

    `per_minute` caps requests in any rolling 60 s window (a provider's published budget).
    The provider's `*ratelimit-remaining`/`-reset` headers set the rest: within one reset
    window, the fewest requests any answer said remain, less the requests still in flight
    (the API may not have counted them yet), may be sent; when none may, the next request
    waits for the reset. Answers arrive out of order when walks run concurrently: the
    fewest remaining is the answer counted last, so this never overshoots.
    """

    def __init__(
        self, per_minute: int | None, *, headers: RateLimitHeaders | None, max_wait: float
    ) -> None:
        self.per_minute = per_minute
        self.max_wait = max_wait  # never wait longer than this for a reset header
        self.window = 60.0
        self.headers = headers  # the provider's rate-limit headers, if it sends any
        self._sent: list[float] = []
        self._tickets = 0  # requests sent so far: a request's ticket is its number
        self._in_flight = 0
        self._remaining: int | None = None  # the fewest remaining any answer of this window said
        self._reset_at = 0.0  # when this window ends (monotonic)
        self._window_ticket = 1  # the first ticket sent in this window
        self._cond = threading.Condition()

    def acquire(self) -> int:
        """Block until one more request fits the budget, then count it; its ticket."""
        with self._cond:
            while True:
                now = time.monotonic()
                wait = 0.0
                if self._remaining is not None and now >= self._reset_at:
                    # A new window: the answers to requests sent from now on tell its budget.
                    self._remaining, self._window_ticket = None, self._tickets + 1
                if self._remaining is not None and self._remaining - self._in_flight <= 0:
                    wait = self._reset_at - now
                if self.per_minute:
                    self._sent = [s for s in self._sent if s > now - self.window]
                    if len(self._sent) >= self.per_minute:
                        # A small margin: the server's clock starts its window a bit later.
                        margin = min(1.0, self.window * 0.02)
                        wait = max(wait, self._sent[0] + self.window + margin - now)
                if wait <= 0:
                    if self.per_minute:
                        self._sent.append(now)
                    self._tickets += 1
                    self._in_flight += 1
                    return self._tickets
                self._cond.wait(wait)  # an answer may change the budget meanwhile

    def observe(self, response: requests.Response, ticket: int | None = None) -> None:
        """Respect the provider's own view of the budget for the next requests."""
        if self.headers is None:
            return
        remaining = response.headers.get(self.headers.remaining)
        if remaining is None or not remaining.strip().isdigit():
            return
        wait = reset_seconds(response, self.headers)
        if wait is None:
            return
        reset_at = time.monotonic() + min(wait, self.max_wait)
        with self._cond:
            if ticket is not None and ticket < self._window_ticket:
                return  # sent in an earlier window
            if self._remaining is None or int(remaining) < self._remaining:
                self._remaining = int(remaining)
            self._reset_at = max(self._reset_at, reset_at)
            self._cond.notify_all()

    def done(self) -> None:
        """A request sent after `acquire` was answered (or failed)."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()


def reset_seconds(response: requests.Response, rate_limit: RateLimitHeaders | None) -> float | None:
    """Seconds to wait according to `Retry-After` or the provider's rate-limit reset."""
    headers = response.headers
    retry_after = headers.get("retry-after")
    if retry_after:
        if retry_after.strip().replace(".", "", 1).isdigit():
            return float(retry_after)
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):  # neither seconds nor an HTTP date: ignore it
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    reset = headers.get(rate_limit.reset) if rate_limit else None
    if rate_limit and reset and reset.strip().replace(".", "", 1).isdigit():
        value = float(reset)
        # Unix seconds or seconds from now (`reset_is_epoch`). A huge value is a date.
        if rate_limit.reset_is_epoch or value > 1_000_000_000:
            return max(0.0, value - time.time())
        return value
    return None


class ResponseTimeout(requests.exceptions.Timeout):
    """No complete response (connect to last byte) within the request timeout."""


class ResponseTooLarge(Exception):
    """A response body (decoded) beyond `max_response_bytes`."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response is larger than {limit} bytes")
        self.limit = limit


#: Bytes read from a response body at a time (decoded).
CHUNK = 1 << 16


class Sender(requests.Session):
    """Sends the requests of every tenant of a run, each under its tenant's budget.

    One session and one connection pool for the run, whatever the number of tenants: a
    tenant is a budget and a few headers, not a pool of its own. Cookies are refused, so
    that nothing one tenant's answers set travels with another tenant's requests.
    """

    def __init__(self, tls: ssl.SSLContext | None = None, connections: int = 10) -> None:
        super().__init__()
        self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        #: Proxies by origin: requests would read the environment again for every request.
        self._proxies: dict[Origin, dict[str, str]] = {}
        adapter = DeadlineAdapter(tls, connections)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def fetch(
        self,
        request: requests.PreparedRequest,
        budget: RateBudget,
        *,
        timeout: float,
        max_bytes: int,
    ) -> requests.Response:
        """One request, its whole body read within `timeout` seconds and `max_bytes`.

        Redirects are not followed (the caller decides). Raises ResponseTimeout,
        ResponseTooLarge, or the transport errors of requests.
        """
        ticket = budget.acquire()
        deadline = WATCHDOG.arm(timeout)
        _current.deadline = deadline
        response: requests.Response | None = None
        try:
            origin = origin_of(request.url or "")
            proxies = self._proxies.get(origin)
            if proxies is None:
                proxies = self._proxies[origin] = resolve_proxies(
                    request, dict(self.proxies), self.trust_env
                )
            wait = max(deadline.remaining(), 0.001)
            response = self.send(
                request,
                stream=True,
                timeout=(wait, wait),
                allow_redirects=False,
                proxies=proxies,
            )
            response._content = read_body(response, deadline, max_bytes)
            budget.observe(response, ticket)
        except Exception as exc:
            if response is not None:
                response.close()  # drop the connection: it may hold the rest of a body
            if deadline.expired and not isinstance(exc, ResponseTooLarge):
                msg = f"timed out: no complete response within {timeout:g} s"
                raise ResponseTimeout(msg) from exc
            raise
        finally:
            _current.deadline = None
            WATCHDOG.disarm(deadline)
            budget.done()
        return response


def read_body(response: requests.Response, deadline: Deadline, max_bytes: int) -> bytes:
    """The decoded body, up to `max_bytes`, before the deadline."""
    length = response.headers.get("content-length", "")
    identity = response.headers.get("content-encoding", "identity").lower() == "identity"
    if identity and length.isdigit() and int(length) > max_bytes:
        raise ResponseTooLarge(max_bytes)
    chunks = []
    size = 0
    for chunk in response.iter_content(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(max_bytes)
        if deadline.expired:
            raise ResponseTimeout("the deadline passed")
        chunks.append(chunk)
    if deadline.expired:  # a shut socket may also look like the end of the body
        raise ResponseTimeout("the deadline passed")
    return b"".join(chunks)


class Deadline:
    """When one request must be complete, and the connections serving it."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.expired = False
        self.done = False
        self._connections: list[HTTPConnection | socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, connection: HTTPConnection | socket.socket) -> None:
        with self._lock:
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _shut(connection)

    def finish(self) -> None:
        """The request is over: never expire (its connection may serve the next one)."""
        with self._lock:
            self.done = True
            self.at = -1.0  # the watchdog skips it when its turn comes

    def expire(self) -> None:
        with self._lock:
            if self.done:  # the request completed in time: its connection is reused
                return
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: HTTPConnection | socket.socket) -> None:
    """Wake whatever thread is blocked reading this connection (it then fails)."""
    sock = connection if isinstance(connection, socket.socket) else connection.sock
    if sock is not None:
        # The plain socket's shutdown, also under TLS: the reader owns the TLS state.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """One daemon thread that expires deadlines (and shuts their sockets) on time."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> Deadline:
        deadline = Deadline(time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._ids), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:  # due before the one the watchdog waits for
                self._cond.notify()
        return deadline

    def disarm(self, deadline: Deadline) -> None:
        deadline.finish()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                wait = at - time.monotonic()
                if deadline.at == at and wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if deadline.at == at:
                deadline.expire()


WATCHDOG = Watchdog()
_current = threading.local()  # .deadline: the request this thread is sending


def _watch(connection: HTTPConnection | socket.socket | None) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None and connection is not None:
        deadline.watch(connection)


class _Watched:
    """Watched from sending the request (connect, TLS) to the last byte of the body."""

    sock: socket.socket | None

    def request(self, *args: t.Any, **kwargs: t.Any) -> None:
        _watch(t.cast("HTTPConnection", self))
        super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> t.Any:
        # The socket itself: a response that closes the connection detaches it from here.
        _watch(self.sock)
        return super().getresponse()  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with watched connections and, when verifying, our TLS context."""

    def __init__(self, tls: ssl.SSLContext | None = None, connections: int = 10) -> None:
        self.tls = tls
        # Connections kept per host: at least one for each request in flight at once.
        super().__init__(pool_connections=4, pool_maxsize=max(10, connections))

    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: t.Any) -> t.Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS brings its own pools
            manager.pool_classes_by_scheme = _POOLS
        return manager

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: t.Any, cert: t.Any = None
    ) -> t.Any:
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        if verify is True and self.tls is not None:
            pool["ssl_context"] = self.tls  # requests' documented way to a custom context
        return host, pool


#: Environment variables naming CA bundles (files) or folders of CA certificates.
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def tls_context(logger: logging.Logger) -> ssl.SSLContext:
    """The CAs requests trusts (certifi) plus every CA bundle the environment names.

    requests reads REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE only for `Session.request`, not for
    the prepared requests the tap sends; OpenSSL's SSL_CERT_FILE/SSL_CERT_DIR are not
    read at all once a bundle is given. A corporate CA in any of them is trusted here.
    """
    context = create_urllib3_context()
    context.load_verify_locations(DEFAULT_CA_BUNDLE_PATH)
    loaded = {os.path.realpath(DEFAULT_CA_BUNDLE_PATH)}  # one bundle is often named thrice
    for name in CA_VARIABLES:
        for path in filter(None, os.environ.get(name, "").split(os.pathsep)):
            real = os.path.realpath(path)
            if real in loaded:
                continue
            loaded.add(real)
            try:
                if os.path.isdir(path):
                    context.load_verify_locations(capath=path)
                else:
                    context.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                logger.warning("%s=%s is not a usable CA bundle, ignored: %s", name, path, exc)
    return context


Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of a URL: where its credentials may go."""
    parts = urlparse(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def host_of(url: str) -> str:
    """The host part of a URL, for messages."""
    return urlparse(url).hostname or url

"""Shared HTTP behaviour of every stream: auth, cursor paging, retries, errors, rows."""

from __future__ import annotations

import email.utils
import logging
import sys
import tempfile
import threading
import time
import typing as t
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from http import HTTPStatus
from urllib.parse import urlparse

import msgspec
import requests
from singer_sdk import RESTStream
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.pagination import BaseAPIPaginator
from singer_sdk.singerlib.messages import Message, SingerMessageType
from singer_sdk.streams.rest import HTTPRequest, PageContext

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from singer_sdk.helpers.types import Context

    from tap_lms_unified.tap import TapLmsUnified

_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()


# ---------------------------------------------------------------- errors


class LmsAPIError(FatalAPIError):
    """An error the provider answered and retrying cannot fix."""


class AuthenticationError(LmsAPIError):
    """401/403: the API key or the connector token was refused."""


class IntegrationNotReadyError(LmsAPIError):
    """The provider has not finished the integration's first sync (Kombo 409)."""


class TLSError(LmsAPIError):
    """The API's TLS certificate could not be verified: retrying will not help."""


#: Transport failures retried like a 5xx: timeouts, resets, truncated bodies.
TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    ConnectionError,
)


class PaginationLoopError(LmsAPIError):
    """The API sent back the cursor it was given: paging would never end."""


# ---------------------------------------------------------------- timestamps


def utc_iso(value: object) -> str | None:
    """Return `value` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC), or None when it is no timestamp.

    One fixed format matters: the SDK compares bookmark strings as strings.
    """
    if not isinstance(value, str) or not value:
        return None
    # Fast path for the APIs' usual `2024-01-01T10:00:00.123Z` (still checked: no Feb 30).
    if len(value) == 24 and value[19] == "." and value[23] == "Z" and value[20:23].isdigit():
        try:
            datetime.fromisoformat(value[:19])
        except ValueError:
            return None
        return value[:23] + "000Z"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, ValueError):  # e.g. year 0001 with a positive offset
        return None


def format_updated_after(moment: datetime) -> str:
    """Kombo's filter format: `2024-01-01T00:00:00.000Z` (it rejects `+00:00`)."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------- secrets


class Redactor:
    """Replaces every configured secret in a text before it is logged or raised."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


# ---------------------------------------------------------------- rate budget


class RateBudget:
    """Keeps one tenant under its request budget, proactively and from the API's headers.

    `per_minute` caps requests in any rolling 60 s window (Bindbee: 200 per token).
    After each response the provider's `*ratelimit-remaining`/`-reset` headers are read:
    when nothing remains, the next request waits for the reset (Kombo sends these).
    """

    def __init__(
        self, per_minute: int | None, *, reset_is_epoch: bool = False, max_wait: float = 300
    ) -> None:
        self.per_minute = per_minute
        self.max_wait = max_wait  # never wait longer than this for a reset header
        self.window = 60.0
        self.reset_is_epoch = reset_is_epoch
        self._sent: list[float] = []
        self._not_before = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until one more request fits the budget, then count it."""
        with self._lock:
            while True:
                now = time.monotonic()
                wait = self._not_before - now
                if self.per_minute:
                    self._sent = [s for s in self._sent if s > now - self.window]
                    if len(self._sent) >= self.per_minute:
                        # A small margin: the server's clock starts its window a bit later.
                        margin = min(1.0, self.window * 0.02)
                        wait = max(wait, self._sent[0] + self.window + margin - now)
                if wait <= 0:
                    if self.per_minute:
                        self._sent.append(now)
                    return
                time.sleep(wait)

    def observe(self, response: requests.Response) -> None:
        """Respect the provider's own view of the budget for the next request."""
        headers = response.headers
        remaining = headers.get("ratelimit-remaining") or headers.get("x-ratelimit-remaining")
        if remaining is None or not remaining.strip().isdigit() or int(remaining) > 0:
            return
        wait = reset_seconds(response, reset_is_epoch=self.reset_is_epoch)
        if wait is not None:
            wait = min(wait, self.max_wait)
            with self._lock:
                self._not_before = max(self._not_before, time.monotonic() + wait)


def reset_seconds(response: requests.Response, *, reset_is_epoch: bool) -> float | None:
    """Seconds to wait according to `Retry-After` or the rate-limit reset header."""
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
                when = when.replace(tzinfo=timezone.utc)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    reset = headers.get("ratelimit-reset") or headers.get("x-ratelimit-reset")
    if reset and reset.strip().replace(".", "", 1).isdigit():
        value = float(reset)
        # Bindbee sends Unix seconds; Kombo sends seconds from now. A huge value is a date.
        if reset_is_epoch or value > 1_000_000_000:
            return max(0.0, value - time.time())
        return value
    return None


class BudgetedSession(requests.Session):
    """A session that asks the tenant's budget before every request, retries included."""

    def __init__(self, budget: RateBudget) -> None:
        super().__init__()
        self.budget = budget

    def send(self, request: requests.PreparedRequest, **kwargs: t.Any) -> requests.Response:
        self.budget.acquire()
        response = super().send(request, **kwargs)
        self.budget.observe(response)
        return response


# ---------------------------------------------------------------- output


class SingerWriter(MsgSpecWriter):
    """The SDK's msgspec writer, writing RECORDs in 1 MiB chunks instead of one by one.

    Each write to stdout is a system call that also hands the GIL to the walk threads; a
    write (and flush) per record cost more than the rest of writing it. Nothing is lost:
    every other message (STATE, SCHEMA, ACTIVATE_VERSION) is written and flushed together
    with all records before it, and a killed run resumes from the last STATE received.
    """

    CHUNK = 1 << 20

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = bytearray()

    def write_message(self, message: Message) -> None:
        self._pending += self.format_message(message)
        if message.type != SingerMessageType.RECORD or len(self._pending) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is not None:
            buffer.write(self._pending)
        else:  # a text stream without bytes underneath (tests' io.StringIO)
            sys.stdout.write(self._pending.decode())
        self._pending.clear()
        sys.stdout.flush()


# ---------------------------------------------------------------- tenants


@dataclass
class Tenant:
    """One customer connection: a Kombo integration or a Bindbee connector."""

    key: str  # its non-secret name: the integration id or the connector name
    headers: dict[str, str] = field(repr=False)  # X-Integration-Id / x-connector-token
    session: BudgetedSession = field(repr=False)
    records: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    seconds: float = 0.0
    failure: str | None = None
    error: BaseException | None = field(default=None, repr=False)

    def summary(self) -> str:
        """One log line: outcome, records per stream, requests, retries, 429s, duration."""
        streams = " ".join(f"{name}={count}" for name, count in sorted(self.records.items()))
        outcome = f"FAILED ({self.failure})" if self.failure else "ok"
        return (
            f"Tenant {self.key}: {outcome}; records: {streams or 'none'}; "
            f"{self.requests} requests, {self.retries} retries, {self.throttled} throttled "
            f"(429); {self.seconds:.1f} s walking"
        )


#: Errors that end one tenant's run (the others go on): the provider refused or kept failing.
TENANT_ERRORS = (
    FatalAPIError,
    RetriableAPIError,
    requests.exceptions.RequestException,
    ConnectionError,
)


# ---------------------------------------------------------------- paging


class CursorPaginator(BaseAPIPaginator[str | None]):
    """Follows the body's cursor until it is null; an empty page with a cursor is not the end."""

    def __init__(self, stream: LmsStream) -> None:
        super().__init__(None)
        self.stream = stream

    def get_next(self, response: requests.Response) -> str | None:
        return self.stream.next_cursor(self.stream.page_body(response))

    def continue_if_empty(self, response: requests.Response) -> bool:
        return self.get_next(response) is not None

    def advance(self, response: requests.Response) -> None:
        # Overridden to raise a clear, typed error instead of the SDK's bare RuntimeError.
        sent = self.current_value
        following = self.get_next(response)
        if following is not None and following == sent:
            msg = (
                f"{self.stream.endpoint} returned the cursor it was sent: a pagination loop "
                f"(page {self.count + 1}). Stopping instead of fetching the same page forever."
            )
            raise PaginationLoopError(msg)
        super().advance(response)


# ---------------------------------------------------------------- streams


class LmsStream(RESTStream[str | None]):
    """Base stream: one provider endpoint, paged by cursor, rows normalised for targets."""

    _tap: TapLmsUnified
    # `normalise` puts every record in the schema's shape and type (timestamps included),
    # so the SDK's per-value conformance pass (40% of a run's CPU) has nothing left to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    _warned_keys: frozenset[str] = frozenset()
    #: API fields that go to a partner stream, so not in this schema (no warning).
    split_off: t.ClassVar[frozenset[str]] = frozenset()
    #: The record field (and partition key) naming the tenant a record came from.
    tenant_field: t.ClassVar[str]
    #: Fields that are timestamps in our schema, normalised to UTC ISO-8601.
    datetime_fields: t.ClassVar[tuple[str, ...]] = ()

    # -- provider specifics (kombo.py / bindbee.py) ---------------------------------

    def results(self, body: t.Any) -> list[dict]:
        """The records of one decoded page; raises on a body that is not the envelope."""
        raise NotImplementedError

    def next_cursor(self, body: t.Any) -> str | None:
        """The cursor of the next page, None on the last one."""
        raise NotImplementedError

    def error_details(self, body: t.Any) -> tuple[str | None, str]:
        """(error code, human message) from the provider's error body."""
        raise NotImplementedError

    def rows(self, record: dict) -> Iterator[dict]:
        """This stream's rows from one API record (nested streams yield several)."""
        yield self.normalise(record)

    # -- SDK hooks -------------------------------------------------------------------

    @property
    def url_base(self) -> str:
        return self._tap.base_url

    @property
    def endpoint(self) -> str:
        """`GET <path>` as named in logs and errors."""
        return f"GET {self.path}"

    @cached_property
    def authenticator(self) -> BearerTokenAuthenticator:
        return BearerTokenAuthenticator(token=self.config["api_key"])

    @property
    def http_headers(self) -> dict:
        return {"User-Agent": self.user_agent, "Accept": "application/json"}

    @property
    def partitions(self) -> list[dict]:
        # One partition per tenant: its own bookmarks, named without secrets.
        return [{self.tenant_field: key} for key in self._tap.tenants]

    def tenant(self, context: Context | None) -> Tenant:
        if not context:
            raise ValueError(f"stream {self.name} needs a tenant context")
        return self._tap.tenants[context[self.tenant_field]]

    def get_http_request(self, *, page: PageContext) -> HTTPRequest:
        request = super().get_http_request(page=page)
        request.headers.update(self.tenant(page.stream_context).headers)
        return request

    @property
    def user_agent(self) -> str:
        return str(self.config.get("user_agent") or f"tap-lms-unified/{self._tap.plugin_version}")

    @property
    def requests_session(self) -> requests.Session:
        # Only prepares requests; they are sent through the tenant's own budgeted session.
        return self._tap.prepare_session

    @property
    def timeout(self) -> float:  # type: ignore[override]
        return float(self.config.get("request_timeout", 60))

    def get_new_paginator(self) -> CursorPaginator:
        return CursorPaginator(self)

    def page_body(self, response: requests.Response) -> t.Any:
        """The decoded JSON body, decoded once and shared by the paginator and the parser."""
        cached = response.__dict__.get("_lms_body", _MISSING)
        if cached is _MISSING:
            cached = _DECODE.decode(response.content)
            response.__dict__["_lms_body"] = cached
        return cached

    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        return self.results(self.page_body(response))

    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status < HTTPStatus.BAD_REQUEST:
            self._validate_body(response)
            return
        body = _decode_or_none(response)
        code, message = self.error_details(body) if body is not None else (None, "")
        text = self.error_text(response, code, message)
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            if code and code.startswith("INTEGRATION."):
                raise IntegrationNotReadyError(text)
            raise RetriableAPIError(text, response)
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise AuthenticationError(text)
        if status == HTTPStatus.CONFLICT or (code or "").startswith("INTEGRATION.SETUP"):
            raise IntegrationNotReadyError(text)
        raise LmsAPIError(text)

    def _validate_body(self, response: requests.Response) -> None:
        """A 200 must carry the provider's JSON envelope; a proxy's HTML page is retried."""
        try:
            body = self.page_body(response)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            kind = response.headers.get("content-type", "unknown content type")
            msg = (
                f"{self.endpoint} returned HTTP {response.status_code} with a body that is not "
                f"JSON ({kind}, {len(response.content)} bytes): retrying"
            )
            raise RetriableAPIError(msg, response) from exc
        try:
            self.results(body)
            self.next_cursor(body)
        except (KeyError, TypeError, AttributeError) as exc:
            keys = sorted(body)[:5] if isinstance(body, dict) else type(body).__name__
            msg = (
                f"{self.endpoint} returned HTTP {response.status_code} but not the "
                f"{self._tap.provider_label} envelope (got {keys})"
            )
            raise LmsAPIError(self._tap.redact(msg)) from exc

    def error_text(self, response: requests.Response, code: str | None, message: str) -> str:
        """`GET /lms/users → HTTP 401 PLATFORM.X: message`, with secrets redacted."""
        reason = f" {code}" if code else ""
        detail = f": {message}" if message else f": {response.reason}"
        text = f"{self.endpoint} → HTTP {response.status_code}{reason}{detail}"
        if response.status_code == HTTPStatus.UNAUTHORIZED:
            text += f" — check the api_key{self._tap.tenant_setting_hint}"
        return self._tap.redact(text)

    def response_error_message(self, response: requests.Response) -> str:
        # Overridden: the SDK's default embeds the whole body, which may echo secrets.
        body = _decode_or_none(response)
        code, message = self.error_details(body) if body is not None else (None, "")
        return self.error_text(response, code, message)

    # -- retries: wait as the provider says, capped, a bounded number of times ------------

    def backoff_max_tries(self) -> int:
        return int(self.config.get("max_retries", 5)) + 1

    def backoff_wait_generator(self) -> t.Generator[float, t.Any, None]:
        cap = float(self.config.get("max_retry_wait_seconds", 300))
        attempt = 0
        exception = yield 0.0  # primed by backoff with send(None)
        while True:
            attempt += 1
            wait = None
            if isinstance(exception, RetriableAPIError) and exception.response is not None:
                wait = reset_seconds(exception.response, reset_is_epoch=self._tap.reset_is_epoch)
            if wait is None:
                wait = float(min(2 ** (attempt - 1), 60))
            exception = yield min(wait, cap)

    def backoff_jitter(self, value: float) -> float:
        # A small jitter on top of the provider's wait, never below it.
        return value + min(1.0, value * 0.1)

    def backoff_handler(self, details: t.Any) -> None:
        exc = details.get("exception")
        tenant: Tenant = details["args"][1]  # send(prepared, tenant)
        tenant.retries += 1
        response = getattr(exc, "response", None)
        if response is not None and response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            tenant.throttled += 1
        self.log(
            "Tenant %s: retrying %s in %.1f s (try %d): %s",
            tenant.key,
            self.endpoint,
            details.get("wait") or 0.0,
            details.get("tries") or 0,
            self._tap.redact(str(exc) if exc else "transient error"),
            level=logging.WARNING,
        )

    # -- rows ------------------------------------------------------------------------

    @cached_property
    def schema_fields(self) -> tuple[str, ...]:
        return tuple(self.schema["properties"])

    def normalise(self, record: dict) -> dict:
        """The record in the schema's shape, timestamps in UTC ISO-8601.

        Every schema key is present (null when the API sent none) and keys the schema does
        not know are dropped, with one warning per stream and key.
        """
        shaped = {name: record.get(name) for name in self.schema_fields}
        if len(shaped) != len(record) or record.keys() != shaped.keys():
            unknown = record.keys() - shaped.keys() - self.split_off - self._warned_keys
            if unknown:
                self._warned_keys |= unknown
                self.log(
                    "Stream %s: the API sent fields the schema does not have, dropped: %s",
                    self.name,
                    ", ".join(sorted(unknown)),
                    level=logging.WARNING,
                )
        record = shaped
        for name in self.datetime_fields:
            value = record.get(name)
            if value is not None:
                record[name] = utc_iso(value)
                if record[name] is None:
                    self.log(
                        "Field %s of a %s record is not a timestamp (%r): emitted as null",
                        name,
                        self.name,
                        str(value)[:40],
                        level=logging.WARNING,
                    )
        return record

    # -- walking ---------------------------------------------------------------------

    def iter_pages(self, context: Context | None) -> Iterator[requests.Response]:
        """One walk of the endpoint for one tenant: a validated response per page.

        The SDK's `request_records` loop, kept page-aware so that the raw page can be
        handed from a worker thread to the main thread (see prefetch.py).
        """
        tenant = self.tenant(context)
        paginator = self.get_new_paginator()
        send = self.request_decorator(self.send)  # type: ignore[arg-type]  # (request, tenant)
        while not paginator.finished:
            prepared = self._prepare_request(context=context, page=paginator)
            response = send(prepared, tenant)  # type: ignore[arg-type]
            yield response
            paginator.advance(response)

    def send(self, prepared: requests.PreparedRequest, tenant: Tenant) -> requests.Response:
        """Send through the tenant's budgeted session and validate the answer."""
        tenant.requests += 1
        try:
            response = tenant.session.send(
                prepared, timeout=self.timeout, allow_redirects=self.allow_redirects
            )
        except requests.exceptions.SSLError as exc:
            reason = str(exc).rsplit("SSLError(", 1)[-1].rstrip(")")
            msg = (
                f"{self.endpoint}: TLS verification failed for {host_of(prepared.url or '')} "
                f"({reason}); not retried. Fix the certificate or proxy "
                "('tls_verify: false' only for debugging)."
            )
            raise TLSError(self._tap.redact(msg)) from exc
        except (*TRANSPORT_ERRORS,) as exc:
            # Retried like a 5xx; when retries run out, the error names the endpoint.
            msg = f"{self.endpoint}: {type(exc).__name__} (no complete response)"
            raise RetriableAPIError(self._tap.redact(msg)) from exc
        self.validate_response(response)
        return response

    def request_records(self, context: Context | None) -> Iterable[dict]:
        for response in self.iter_pages(context):
            yield from self.results(self.page_body(response))

    def api_records(self, context: Context | None) -> Iterator[dict]:
        """This tenant's API records, from its prefetched walk."""
        self.start_walks()
        for page in self._tap.prefetcher.pages(self.name, self.tenant(context).key):
            yield from self.results(_DECODE.decode(page))

    _walks_started = False

    def start_walks(self) -> None:
        """Start, once per run, the walks of every tenant of this stream still in the run."""
        if self._walks_started:
            return
        self._walks_started = True
        walks = []
        for context in self.partitions:
            tenant = self.tenant(context)
            if tenant.failure is None and self.needs_walk(tenant):
                self.prepare_walk(context)
                walks.append((tenant.key, self._raw_pages_of(context)))
        self._tap.prefetcher.start(self.name, walks)

    def prepare_walk(self, context: dict) -> None:
        """Read what a walk needs from the shared state, here in the main thread.

        Walks run in worker threads, which must only read what is prepared for them.
        """

    def _raw_pages_of(self, context: dict) -> t.Callable[[], Iterator[bytes]]:
        tenant = self.tenant(context)

        def walk() -> Iterator[bytes]:
            started = time.monotonic()
            try:
                for response in self.iter_pages(context):
                    yield response.content
            finally:
                tenant.seconds += time.monotonic() - started

        return walk

    def needs_walk(self, tenant: Tenant) -> bool:
        return True

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        tenant = self.tenant(context)
        if tenant.failure is not None:
            self.log("Tenant %s failed earlier in this run: skipping %s", tenant.key, self.name)
            return
        if self.replication_key:
            # The SDK writes the signpost (bookmarks never pass the sync start) at stream
            # level only; each tenant's partition needs its own.
            signpost = self.get_replication_key_signpost(context)
            self.state_manager.write_replication_key_signpost(signpost, context=context)
        count = 0
        try:
            field, key = self.tenant_field, tenant.key
            for row in self.tenant_rows(context):
                row[field] = key
                count += 1
                yield row
        except TENANT_ERRORS as exc:
            # Keep the tenant's previous bookmark: this walk did not complete.
            self.get_context_state(context).pop("progress_markers", None)
            self._tap.fail_tenant(tenant, self.name, exc)
        finally:
            tenant.records[self.name] += count

    def tenant_rows(self, context: Context | None) -> Iterator[dict]:
        """This stream's rows for one tenant."""
        for record in self.api_records(context):
            yield from self.rows(record)


class WalkStream(LmsStream):
    """A stream that shares one walk of its endpoint with a partner stream.

    Kombo nests progress in users and revisions in courses. When both streams of a pair
    are selected the endpoint is walked once: the stream synced first (the SDK syncs in
    name order) writes its partner's rows to a temporary spool file per tenant, which the
    partner then reads. Memory stays flat and each stream keeps the SDK's own sync, state
    and SCHEMA handling.
    """

    partner: t.ClassVar[str]
    #: The partner this stream's walks are feeding, if any.
    walk_partner: WalkStream | None = None

    def needs_walk(self, tenant: Tenant) -> bool:
        return (self.name, tenant.key) not in self._tap.spools

    def start_walks(self) -> None:
        if self._walks_started:
            return
        partner = self._tap.streams.get(self.partner)
        self.walk_partner = (
            partner
            if isinstance(partner, WalkStream)
            and partner.selected
            and partner.name not in self._tap.synced_walks
            else None
        )
        self._tap.synced_walks.add(self.name)
        if self.walk_partner is not None:
            self._tap.synced_walks.add(self.walk_partner.name)
        super().start_walks()

    def tenant_rows(self, context: Context | None) -> Iterator[dict]:
        tenant = self.tenant(context)
        spool = self._tap.spools.pop((self.name, tenant.key), None)
        if spool is not None:
            yield from spool.read()
            return
        self.start_walks()  # decides walk_partner
        records = self.api_records(context)
        feed = self.walk_partner
        if feed is None:
            for record in records:
                yield from self.rows(record)
            return
        spool = Spool()
        try:
            for record in records:
                spool.write(feed.rows(record))
                yield from self.rows(record)
            self._tap.spools[feed.name, tenant.key], spool = spool, None
        finally:
            if spool is not None:  # this walk failed (and so did its tenant)
                spool.close()


class Spool:
    """Rows written to an anonymous temporary file and read back once."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="tap-lms-unified-", buffering=1 << 20)  # noqa: SIM115

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self._file.write(_ENCODE.encode(row) + b"\n")

    def read(self) -> Iterator[dict]:
        try:
            self._file.seek(0)
            for line in self._file:
                yield _DECODE.decode(line)
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()


_MISSING = object()


def _decode_or_none(response: requests.Response) -> t.Any:
    try:
        return _DECODE.decode(response.content) if response.content else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def host_of(url: str) -> str:
    """The host part of a URL, for messages."""
    return urlparse(url).hostname or url


def start_of(stream: LmsStream, context: Context | None, lookback: timedelta) -> datetime | None:
    """Where an incremental walk starts: the bookmark minus the lookback, or start_date.

    Read from state directly (not the SDK's starting marker) because a walk also has to
    know its partner's start before the partner's own sync has begun.
    """
    state = stream.get_context_state(context)
    bookmark = None
    if state.get("replication_key") == stream.replication_key:
        bookmark = state.get("replication_key_value")
    candidates = []
    if bookmark:
        parsed = utc_iso(bookmark)
        if parsed:
            candidates.append(_parse(parsed) - lookback)
    start_date = stream.config.get("start_date")
    if start_date:
        candidates.append(_parse(utc_iso(start_date) or start_date))
    return max(candidates) if candidates else None


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

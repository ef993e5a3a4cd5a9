"""The stream base every provider's streams build on: one endpoint, paged by cursor.

A stream's endpoint, key, bookmark and schema are declared in its provider's module; this
module holds what they share: the request hooks, retries, error translation, the walk of
one tenant's pages (in a worker thread, see walking.py), and paired streams that share
one walk of an endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import typing as t
from datetime import UTC, datetime
from functools import cached_property
from http import HTTPStatus
from urllib.parse import urljoin

import backoff
import msgspec
import requests
from singer_sdk import RESTStream, Stream, metrics
from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.contrib.msgspec import encoder as singer_encoder
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.pagination import BaseAPIPaginator
from singer_sdk.singerlib.catalog import REPLICATION_FULL_TABLE, REPLICATION_INCREMENTAL

from tap_lms_unified.errors import (
    TENANT_ERRORS,
    TRANSPORT_ERRORS,
    AuthenticationError,
    BadDataError,
    IntegrationNotReadyError,
    LmsAPIError,
    PageSizeRejectedError,
    PaginationLoopError,
    RedirectRefusedError,
    ResponseTooLargeError,
    TLSError,
    UnreadableRecord,
)
from tap_lms_unified.http import (
    Origin,
    ResponseTimeout,
    ResponseTooLarge,
    host_of,
    origin_of,
    reset_seconds,
)
from tap_lms_unified.output import SingerWriter
from tap_lms_unified.shaping import Shaper, decode_json, json_type_name
from tap_lms_unified.walking import Spool

if t.TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Iterator

    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context
    from singer_sdk.singerlib import Catalog
    from singer_sdk.streams.rest import HTTPRequest, PageContext

    from tap_lms_unified.run import Run, Tenant

#: Redirects followed within the api_url's origin, per request.
MAX_REDIRECTS = 5
#: Invalid records (no usable primary key) logged per stream and tenant; the rest are counted.
INVALID_LOGGED = 20
#: The shortest wait before any retry (unless `max_retry_wait_seconds` is lower).
MIN_RETRY_WAIT = 1.0


class CursorPaginator(BaseAPIPaginator[str | None]):
    """Follows the body's cursor until it is null; an empty page with a cursor is not the end."""

    def __init__(self, stream: LmsStream) -> None:
        super().__init__(None)
        self.stream = stream
        #: Every cursor this walk has sent: one coming back means a cycle (A → B → A).
        self.seen: set[str] = set()

    def get_next(self, response: requests.Response) -> str | None:
        return self.stream.cursor_of(response)

    def continue_if_empty(self, response: requests.Response) -> bool:
        return self.get_next(response) is not None

    def advance(self, response: requests.Response) -> None:
        # Overridden to raise a clear, typed error instead of the SDK's bare RuntimeError.
        sent = self.current_value
        if sent is not None:
            self.seen.add(sent)
        following = self.get_next(response)
        if following is not None and following in self.seen:
            again = "the cursor it was sent" if following == sent else "a cursor it sent before"
            msg = (
                f"{self.stream.endpoint} returned {again}: a pagination loop "
                f"(page {self.count + 1}). Stopping instead of fetching the same pages forever."
            )
            raise PaginationLoopError(msg)
        super().advance(response)


class LmsStream(RESTStream[str | None]):
    """One provider endpoint for every tenant of the run, rows shaped to the schema."""

    # `shape` puts every record in the schema's shape and type (timestamps included), so
    # the SDK's per-value conformance pass (40% of a run's CPU) has nothing left to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    #: API fields that go to a partner stream, so not in this schema (no warning).
    split_off: t.ClassVar[frozenset[str]] = frozenset()
    #: Fields that are timestamps in our schema, normalised to UTC ISO-8601.
    datetime_fields: t.ClassVar[tuple[str, ...]] = ()

    def __init__(self, tap: Tap, run: Run) -> None:
        super().__init__(tap=tap)
        self.run = run
        self.owner = tap  # the SDK's own reference is private
        self.tenant_field = run.provider.tenant_field
        self._dry_run_rows = 0

    # -- rows: overridden by streams whose rows are not the API records -----------------

    def rows(self, record: dict[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        """This stream's rows from one API record (nested streams yield several)."""
        yield self.shape(record)

    @cached_property
    def shape(self) -> Shaper:
        """Puts one record in this stream's schema shape."""
        return Shaper(
            self.name,
            self.schema["properties"],
            self.datetime_fields,
            expected_extra=self.split_off,
            # Keys: a record without a usable one is not emitted (get_records); the tenant
            # field is set by get_records.
            unchecked=(*self.primary_keys, self.tenant_field),
            warn=lambda msg, *args: self.log(msg, *args, level=logging.WARNING),
        )

    # -- SDK hooks -------------------------------------------------------------------

    @property
    def url_base(self) -> str:
        return self.run.base_url

    @property
    def endpoint(self) -> str:
        """`GET <path>` as named in logs and errors."""
        return f"GET {self.path}"

    @cached_property
    def authenticator(self) -> BearerTokenAuthenticator:
        return BearerTokenAuthenticator(token=self.config["api_key"])

    @property
    def http_headers(self) -> dict[str, t.Any]:
        return {"User-Agent": self.run.user_agent, "Accept": "application/json"}

    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        # One partition per tenant: its own bookmarks, named without secrets.
        return [{self.tenant_field: key} for key in self.run.tenants]

    def tenant(self, context: Context | None) -> Tenant:
        if not context:
            raise ValueError(f"stream {self.name} needs a tenant context")
        return self.run.tenants[context[self.tenant_field]]

    def get_http_request(self, *, page: PageContext) -> HTTPRequest:
        request = super().get_http_request(page=page)
        request.headers.update(self.tenant(page.stream_context).headers)
        return request

    @property
    def requests_session(self) -> requests.Session:
        # Only prepares requests; they are sent through the tenant's own budgeted session.
        return self.run.prepare_session

    @property
    def timeout(self) -> float:  # type: ignore[override]
        return float(self.config["request_timeout"])

    def get_new_paginator(self) -> CursorPaginator:
        return CursorPaginator(self)

    def cursor_of(self, response: requests.Response) -> str | None:
        """The next cursor of a page, its envelope checked, once for validation and paging.

        Walk threads do not decode the records: the main thread does, once (walking.py).
        """
        if "_lms_cursor" not in response.__dict__:
            provider = self.run.provider
            try:
                cursor = provider.cursor(response.content)
            except msgspec.DecodeError:  # no JSON, or JSON msgspec refuses: decode_json says
                cursor = provider.page(decode_json(response.content))[1]
            response.__dict__["_lms_cursor"] = cursor
        return t.cast("str | None", response.__dict__["_lms_cursor"])

    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status < HTTPStatus.BAD_REQUEST:
            self._validate_body(response)
            return
        provider = self.run.provider
        body = _decode_or_none(response)
        code, message = provider.error_details(body) if body is not None else (None, "")
        text = self.error_text(response, code, message)
        if provider.not_ready(status, code):
            raise IntegrationNotReadyError(text)
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            raise RetriableAPIError(text, response)
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise AuthenticationError(text)
        if status == HTTPStatus.UNPROCESSABLE_ENTITY and "page_size" in message:
            raise PageSizeRejectedError(text)
        raise LmsAPIError(text)

    def _validate_body(self, response: requests.Response) -> None:
        """A 200 must carry the provider's JSON envelope; a proxy's HTML page is retried."""
        try:
            self.cursor_of(response)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            kind = response.headers.get("content-type", "unknown content type")
            msg = (
                f"{self.endpoint} returned HTTP {response.status_code} with a body that is not "
                f"JSON ({kind}, {len(response.content)} bytes): retrying"
            )
            raise RetriableAPIError(msg, response) from exc
        except (KeyError, TypeError, AttributeError) as exc:
            body = _decode_or_none(response)
            keys = sorted(body)[:5] if isinstance(body, dict) else type(body).__name__
            msg = (
                f"{self.endpoint} returned HTTP {response.status_code} but not the "
                f"{self.run.provider.label} envelope (got {keys})"
            )
            raise LmsAPIError(self.run.redact(msg)) from exc

    def error_text(self, response: requests.Response, code: str | None, message: str) -> str:
        """`GET /lms/users → HTTP 401 PLATFORM.X: message — hint`, with secrets redacted."""
        reason = f" {code}" if code else ""
        detail = f": {message}" if message else f": {response.reason}"
        text = f"{self.endpoint} → HTTP {response.status_code}{reason}{detail}"
        text += self.run.provider.error_hint(response.status_code)
        return self.run.redact(text)

    # -- retries: wait as the provider says, capped, a bounded number of times ------------

    def request_decorator(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        # The SDK's decorator, without backoff's own log lines: `backoff_handler` logs
        # each retry, and the tenant's failure is reported once, where it is handled.
        retried = (RetriableAPIError, *TRANSPORT_ERRORS)
        decorate = backoff.on_exception(
            self.backoff_wait_generator,
            retried,
            max_tries=self.backoff_max_tries,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=None,
        )
        return decorate(func)

    def backoff_max_tries(self) -> int:
        return int(self.config["max_retries"]) + 1

    def backoff_wait_generator(self) -> t.Generator[float, t.Any, None]:
        cap = float(self.config["max_retry_wait_seconds"])
        epoch = self.run.provider.reset_is_epoch
        attempt = 0
        exception = yield 0.0  # primed by backoff with send(None)
        while True:
            attempt += 1
            wait = None
            if isinstance(exception, RetriableAPIError) and exception.response is not None:
                wait = reset_seconds(exception.response, reset_is_epoch=epoch)
            if wait is None:
                wait = float(min(2 ** (attempt - 1), 60))
            # A reset header already in the past (clock skew) must not mean "retry at once".
            exception = yield min(max(wait, MIN_RETRY_WAIT), cap)

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
            self.run.redact(str(exc) if exc else "transient error"),
            level=logging.WARNING,
        )

    # -- one tenant's walk (in a worker thread) -----------------------------------------

    def iter_pages(self, context: Context | None) -> Generator[requests.Response, None, None]:
        """One walk of the endpoint for one tenant: a validated response per page.

        The SDK's `request_records` loop (request counter and sync costs included), kept
        page-aware so that the raw page can be handed from a worker thread to the main
        thread (see walking.py).
        """
        tenant = self.tenant(context)
        paginator = self.get_new_paginator()
        send = self.request_decorator(self.send)  # called as (request, tenant)
        with self.get_http_request_counter() as request_counter:
            request_counter.with_context(context)
            while not paginator.finished:
                size = self.run.page_size
                prepared = self._prepare_request(context=context, page=paginator)
                try:
                    response = send(prepared, tenant)
                except PageSizeRejectedError:
                    if self.run.step_down_page_size(size):
                        continue  # the same page again, smaller
                    raise
                except RecursionError as exc:
                    msg = (
                        f"{self.endpoint}, page {paginator.count + 1}: the JSON body is nested "
                        "too deeply to read"
                    )
                    raise BadDataError(msg) from exc
                request_counter.increment()
                self.update_sync_costs(prepared, response, context)
                yield response
                paginator.advance(response)

    def send(self, prepared: requests.PreparedRequest, tenant: Tenant) -> requests.Response:
        """Send through the tenant's budgeted session and validate the answer.

        Redirects within the api_url's origin are followed (a few); one to another origin,
        or from https to http, fails the tenant: nothing is sent there.
        """
        origin = origin_of(self.url_base)
        for _ in range(MAX_REDIRECTS + 1):
            response = self.fetch(prepared, tenant)
            target = tenant.session.get_redirect_target(response)
            if target is None:
                break
            url = urljoin(response.url, target)
            if origin_of(url) != origin:
                raise RedirectRefusedError(self.redirect_refused(response, origin, url))
            prepared = prepared.copy()
            prepared.prepare_url(url, None)
        else:
            msg = f"{self.endpoint}: more than {MAX_REDIRECTS} redirects; not followed further"
            raise LmsAPIError(self.run.redact(msg))
        self._log_request_duration(response, tenant)
        self.validate_response(response)
        return response

    def fetch(self, prepared: requests.PreparedRequest, tenant: Tenant) -> requests.Response:
        """One HTTP exchange, whole within request_timeout and max_response_bytes."""
        tenant.requests += 1
        try:
            return tenant.session.fetch(
                prepared,
                timeout=self.timeout,
                max_bytes=int(self.config["max_response_bytes"]),
            )
        except requests.exceptions.SSLError as exc:
            reason = str(exc).rsplit("SSLError(", 1)[-1].rstrip(")")
            msg = (
                f"{self.endpoint}: TLS verification failed for {host_of(prepared.url or '')} "
                f"({reason}); not retried. If a private or corporate CA signs the certificate, "
                "point REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) at a bundle that holds it; "
                "'tls_verify: false' turns verification off (debugging only)."
            )
            raise TLSError(self.run.redact(msg)) from exc
        except ResponseTooLarge as exc:
            msg = (
                f"{self.endpoint}: the response is larger than max_response_bytes "
                f"({exc.limit} bytes, decoded); not retried. Raise 'max_response_bytes' if "
                "pages are really that large, or lower 'page_size'."
            )
            raise ResponseTooLargeError(self.run.redact(msg)) from exc
        except ResponseTimeout as exc:
            msg = (
                f"{self.endpoint}: timed out: no complete response within request_timeout "
                f"({self.timeout:g} s)"
            )
            raise RetriableAPIError(self.run.redact(msg)) from exc
        except (*TRANSPORT_ERRORS,) as exc:
            # Retried like a 5xx; when retries run out, the error names the endpoint.
            msg = f"{self.endpoint}: {type(exc).__name__}: {transport_cause(exc)}"
            raise RetriableAPIError(self.run.redact(msg)) from exc

    def redirect_refused(self, response: requests.Response, origin: Origin, url: str) -> str:
        """Why a redirect is not followed, naming the endpoint and the target host."""
        scheme, host, port = origin_of(url)
        why = "another origin"
        if origin[0] == "https" and scheme != "https":
            why = "from https to plain http"
        msg = (
            f"{self.endpoint} → HTTP {response.status_code} redirect to {scheme}://{host}:{port} "
            f"({why}); not followed, so that the API key and the tenant's credentials stay "
            f"with {origin[0]}://{origin[1]}:{origin[2]}. Check 'api_url'."
        )
        return self.run.redact(msg)

    def _log_request_duration(self, response: requests.Response, tenant: Tenant) -> None:
        """The SDK's `http_request_duration` metric, which its own request loop would log."""
        if not self._LOG_REQUEST_METRICS:
            return
        ok = response.status_code < HTTPStatus.BAD_REQUEST
        point = metrics.Point(
            "timer",
            metric=metrics.Metric.HTTP_REQUEST_DURATION,
            value=response.elapsed.total_seconds(),
            tags={
                metrics.Tag.STREAM: self.name,
                metrics.Tag.ENDPOINT: self.path,
                metrics.Tag.HTTP_STATUS_CODE: response.status_code,
                metrics.Tag.STATUS: metrics.Status.SUCCEEDED if ok else metrics.Status.FAILED,
                metrics.Tag.CONTEXT: {self.tenant_field: tenant.key},
            },
        )
        metrics.log(self.metrics_logger, point)

    # -- from walks to records (main thread) --------------------------------------------

    def api_records(self, context: Context | None) -> Generator[dict[str, t.Any], None, None]:
        """This tenant's API records, from its prefetched walk."""
        self.start_walks()
        tenant = self.tenant(context)
        prefetcher = self.run.prefetcher
        if not prefetcher.has(self.name, tenant.key):  # not planned: walk it now
            self.prepare_walk(dict(context or {}))
            prefetcher.start([(self.name, tenant.key, self._raw_pages_of(dict(context or {})))])
        key = tenant.key
        # Where the walk is, for messages about a record: [page, record], from 1.
        position = self.positions[key] = [0, 0]
        with contextlib.closing(prefetcher.pages(self.name, key)) as pages:  # see tenant_rows
            for number, page in enumerate(pages, 1):
                position[:] = number, 0
                for index, record in enumerate(self.records_of(page), 1):
                    position[1] = index
                    if type(record) is not dict:
                        msg = f"the record is {json_type_name(record)}, not an object"
                        raise UnreadableRecord(msg)
                    yield record

    def records_of(self, page: bytes) -> list[t.Any]:
        """The records of a raw page whose envelope was checked (in its walk)."""
        try:
            return self.run.provider.page(decode_json(page))[0]
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            # A record the envelope check skips over (invalid UTF-8, say) ends the tenant.
            msg = f"{self.endpoint} returned a page whose records are not valid JSON: {exc}"
            raise BadDataError(self.run.redact(msg)) from exc

    @cached_property
    def positions(self) -> dict[str, list[int]]:
        """[page, record] of each tenant's walk as read by the main thread."""
        return {}

    def where(self, tenant: Tenant) -> str:
        """`GET /lms/users, page 3, record 17`: the record being read of a tenant's walk."""
        position = self.positions.get(tenant.key)
        if position is None or not position[0]:
            return self.endpoint
        page, record = position
        return f"{self.endpoint}, page {page}" + (f", record {record}" if record else "")

    def start_walks(self) -> None:
        """Start, once per run, the walks of every selected stream for every tenant.

        Called when the first stream starts its sync: the SDK then syncs the streams one
        after the other (in this order), while every walk already fetches its pages.
        Everything a walk reads from the tap's state is prepared here, in the main thread.
        """
        run = self.run
        if run.walks_started:
            return
        run.walks_started = True
        if self.ABORT_AT_RECORD_COUNT is not None:
            # The SDK's connection test reads a record or so per stream: no prefetching,
            # each stream walks its own endpoint when it is read (api_records).
            return
        fed: set[str] = set()  # streams fed by a partner's walk
        walks = []
        for stream in self.owner.streams.values():  # the SDK's sync order
            if not isinstance(stream, LmsStream) or not stream.selected or stream.name in fed:
                continue
            fed.update(stream.plan_partner(fed))
            for context in stream.partitions:
                tenant = stream.tenant(context)
                if tenant.failure is None:
                    stream.prepare_walk(context)
                    walks.append((stream.name, tenant.key, stream._raw_pages_of(context)))
        run.prefetcher.start(walks)

    def plan_partner(self, fed: set[str]) -> set[str]:
        """The streams this stream's walks also feed (see PairedStream)."""
        return set()

    def prepare_walk(self, context: dict[str, t.Any]) -> None:
        """Read what a walk needs from the shared state, here in the main thread.

        Walks run in worker threads, which must only read what is prepared for them.
        """

    def _raw_pages_of(self, context: dict[str, t.Any]) -> t.Callable[[], Iterator[bytes]]:
        tenant = self.tenant(context)

        def walk() -> Iterator[bytes]:
            started = time.monotonic()
            try:
                for response in self.iter_pages(context):
                    yield response.content
            finally:
                tenant.seconds += time.monotonic() - started

        return walk

    # -- the SDK's per-record work, without what this tap never needs --------------------

    @cached_property
    def _plain_writer(self) -> tuple[SingerWriter, bytes] | None:
        """(writer, RECORD line prefix) when a RECORD can be written without the SDK's passes.

        The SDK pops deselected properties, conforms types and applies stream maps to
        every record: with every property selected, conformance off (`shape` did it) and
        no stream map or flattening, all three leave the record unchanged. Otherwise
        (None) every record takes the SDK's own path.
        """
        writer = self.owner.message_writer
        maps = self.stream_maps
        if (
            isinstance(writer, SingerWriter)
            and self.TYPE_CONFORMANCE_LEVEL == TypeConformanceLevel.NONE
            and all(self.mask.values())
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
        ):
            alias = singer_encoder.encode(maps[0].stream_alias)
            return writer, b'{"type":"RECORD","stream":' + alias + b',"record":'
        return None

    # Private SDK method (the per-record loop; no public hook writes a RECORD). Pinned in
    # tests/test_layout.py. Its per-record steps cost as much as the rest of the tap's work
    # on a record; on the plain path they are done here in one place, the same way.
    def _sync_records(
        self, context: Context | None = None, *, write_messages: bool = True
    ) -> Generator[dict[str, t.Any], t.Any, t.Any]:
        plain = self._plain_writer
        if (
            plain is None
            or not write_messages
            or context is not None  # the SDK passes one for child streams only
            or self.child_streams
            or not self.selected
            or self.ABORT_AT_RECORD_COUNT is not None  # `--test`: the SDK's own limit
            or self.is_sorted
        ):
            yield from super()._sync_records(context, write_messages=write_messages)
            return
        writer, prefix = plain
        add, encode = writer.lines.add_record, singer_encoder.encode
        key, every = self.replication_key, self.STATE_MSG_FREQUENCY
        incremental = self.replication_method == REPLICATION_INCREMENTAL
        counter, timer = self.get_record_counter(), self.get_sync_timer()
        # The SDK's post_process returns the record as it is: called only when overridden.
        post: t.Any = self.post_process
        if getattr(post, "__func__", None) is Stream.post_process:
            post = None
        written = 0
        with counter, timer:
            for partition in self.partitions or [{}]:
                counter.with_context(partition)
                timer.with_context(partition)
                current = partition or None
                state_partition = self._get_state_partition_context(current)
                self._write_starting_replication_value(current)
                high = None  # the greatest bookmark value handed to the SDK so far
                manager = self.state_manager
                uncounted = 0  # records not yet added to the counter (added in hundreds)
                partition_keys = tuple((state_partition or {}).items())
                try:
                    for row in self.get_records(current):
                        record = row if post is None else post(row, current)
                        if record is None:
                            continue
                        for field, value in partition_keys:  # as the SDK adds them
                            if field not in record:
                                record[field] = value
                        version, until, suffix = self._record_suffix
                        if version != self._stream_version or time.monotonic() >= until:
                            version, until, suffix = self._record_suffix = self.record_suffix()
                        # The line the SDK's writer would write: only the record is encoded.
                        add(b"".join((prefix, encode(record), suffix)))
                        manager.is_flushed = False
                        if incremental:
                            # Unsorted streams keep the greatest value seen: a record that
                            # cannot raise it leaves the state as it is (the SDK's would too).
                            bookmark = record.get(key) if key else None
                            if type(bookmark) is not str or high is None or bookmark > high:
                                self._increment_stream_state(record, context=current)
                                if type(bookmark) is str:
                                    high = bookmark
                        written += 1
                        if written % every == 0:
                            self._write_state_message()
                        uncounted += 1
                        if uncounted == 100:
                            counter.increment(uncounted)
                            uncounted = 0
                        yield record
                finally:
                    counter.increment(uncounted)
                if current == state_partition:
                    self._finalize_state(self.get_context_state(current))
        self._finalize_state(self.stream_state)
        self._write_state_message()

    #: (table version, monotonic time until which it is current, bytes) of RECORD lines.
    _record_suffix: tuple[int | None, float, bytes] = (None, 0.0, b"")
    #: How long one `time_extracted` stamps RECORDs (the SDK stamps each with its own).
    STAMP_SECONDS = 0.01

    def record_suffix(self) -> tuple[int | None, float, bytes]:
        """The end of a RECORD line after its record: version, time_extracted, newline."""
        version = self._stream_version
        suffix = b"" if version is None else b',"version":' + singer_encoder.encode(version)
        stamp = singer_encoder.encode(datetime.now(UTC))  # what the SDK stamps
        suffix += b',"time_extracted":' + stamp + b"}\n"
        return version, time.monotonic() + self.STAMP_SECONDS, suffix

    # -- full-table syncs: ACTIVATE_VERSION only after every tenant was read in full -----

    @property
    def full_table(self) -> bool:
        """Whether this sync reads everything (the catalog may force it on any stream)."""
        return self.replication_method == REPLICATION_FULL_TABLE

    @property
    def activate_versions(self) -> bool:
        """Whether this full-table sync ends with ACTIVATE_VERSION."""
        default = self.run.provider.activate_versions_by_default
        return self.full_table and bool(self.config.get("emit_activate_version_messages", default))

    @property
    def emit_activate_version_messages(self) -> bool:
        # Off for the SDK, which would send ACTIVATE_VERSION *before* the records: a tenant
        # failing later in the run would then lose all its rows. We send it after the last
        # tenant, and only when every tenant was read in full (see get_records).
        return False

    def apply_catalog(self, catalog: Catalog) -> None:
        # The SDK prefers the entry's `replication_method` (INCREMENTAL as discovered) over
        # the metadata's `forced-replication-method`: forcing FULL_TABLE through the
        # metadata alone would be silently ignored. A method forced there wins.
        super().apply_catalog(catalog)
        entry = catalog.get_stream(self.name)
        root = entry.metadata.get(()) if entry is not None else None
        forced = getattr(root, "forced_replication_method", None)
        if forced and forced != self.forced_replication_method:
            self.forced_replication_method = forced

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        activate = self.activate_versions
        if activate:
            # Private: the SDK stamps RECORDs with this and offers no public setter.
            self._stream_version = self.run.version
        yield from self.tenant_records(context)
        if activate and context == self.partitions[-1]:
            failed = [tenant.key for tenant in self.run.failed()]
            if failed:
                self.log(
                    "Not activating the new version of %s: tenants %s were not read in "
                    "full, and their rows must not be marked deleted.",
                    self.name,
                    ", ".join(failed),
                    level=logging.WARNING,
                )
            elif self.filtered():
                self.log(
                    "Not activating the new version of %s: the walk was filtered "
                    "(start_date), and the rows it left out must not be marked deleted.",
                    self.name,
                    level=logging.WARNING,
                )
            else:
                # Private: the SDK's writer of this message (it applies stream maps' aliases).
                self._write_activate_version_message(self.run.version)

    def filtered(self) -> bool:
        """Whether this run's walks of this stream left records out (a date filter)."""
        return False

    def tenant_records(self, context: Context | None) -> Iterator[dict[str, t.Any]]:
        """One tenant's records; a failure ends this tenant only."""
        tenant = self.tenant(context)
        if tenant.failure is not None:
            self.log("Tenant %s failed earlier in this run: skipping %s", tenant.key, self.name)
            return
        state = self.get_context_state(context)
        signpost = None
        if self.replication_key and not self.full_table:
            # The SDK writes the signpost (bookmarks never pass the sync start) at stream
            # level only; each tenant's partition needs its own.
            signpost = self.get_replication_key_signpost(context)
            self.state_manager.write_replication_key_signpost(signpost, context=context)
            # Bookmarks of unsorted streams are promoted when the partition completes; the
            # SDK would log that on every partition, the run says it once.
            state.setdefault("progress_markers", {"Note": "Promoted when the walk completes."})
            self.run.note_once(
                "Bookmarks move only when a stream has been read in full for a tenant; an "
                "interrupted run resumes from the previous bookmarks, minus the lookback."
            )
        count = 0
        # Set by the SDK's connection test (`--test`): a few records, then stop quietly;
        # a failure there is the test's answer, so it is not absorbed as a tenant's.
        limit = self.ABORT_AT_RECORD_COUNT
        self.positions.pop(tenant.key, None)
        rows = self.tenant_rows(context)
        try:
            field, key = self.tenant_field, tenant.key
            keys = self.primary_keys
            only = keys[0] if len(keys) == 1 else None
            for row in rows:
                if limit is not None and self._dry_run_rows >= limit:
                    break  # the walk is closed below
                if only:
                    value = row.get(only)
                    usable = type(value) is str and value != ""
                else:
                    usable = all(type(row.get(k)) is str and row.get(k) for k in keys)
                if not usable:
                    self.reject(tenant, row)
                    continue
                self._dry_run_rows += 1
                row[field] = key
                count += 1
                yield row
        except Exception as exc:
            # Anything that goes wrong reading or shaping this tenant's data ends this
            # tenant only; its previous bookmark is kept: this walk did not complete.
            error = self.tenant_error(tenant, exc)
            if limit is not None:  # the connection test's answer
                if error is exc:
                    raise
                raise error from exc
            state.pop("progress_markers", None)
            self.run.fail_tenant(tenant, self.name, error)
        else:
            if signpost is not None and not count:
                # A complete walk without rows: nothing changed up to the sync start. The
                # bookmark moves there, so that this stream never holds a walk back.
                state["progress_markers"].update(
                    replication_key=self.replication_key, replication_key_value=signpost
                )
        finally:
            # The walk ends here, also when it failed or the test's limit stopped it: its
            # pages (and their memory) are let go, not held by a traceback the error keeps.
            rows.close()
            tenant.records[self.name] += count

    def tenant_error(self, tenant: Tenant, exc: Exception) -> Exception:
        """The error that fails a tenant: the walk's own, or one naming where and what."""
        if isinstance(exc, TENANT_ERRORS):
            return exc
        if isinstance(exc, UnreadableRecord):
            what = str(exc)
        elif isinstance(exc, RecursionError):
            what = "a value nested too deeply to read"
        else:
            what = f"{type(exc).__name__}: {exc}"
        error = BadDataError(self.run.redact(f"{self.where(tenant)}: {what}"))
        error.__cause__ = exc
        return error

    def reject(self, tenant: Tenant, row: dict[str, t.Any]) -> None:
        """Count (and log, the first few times) a row without a usable primary key."""
        tenant.invalid[self.name] += 1
        count = tenant.invalid[self.name]
        if count > INVALID_LOGGED:
            return
        problems = []
        for name in self.primary_keys:
            value = row.get(name)
            if value is None:
                problems.append(f"{name} is null or missing")
            elif type(value) is not str or not value:
                shown = repr(value) if type(value) in (int, float, str) else ""
                problems.append(f"{name} is {json_type_name(value)} {shown}".rstrip())
        self.log(
            "Stream %s, tenant %s, %s: %s, not a usable primary key: record not emitted "
            "(counted as invalid in the tenant's summary)%s",
            self.name,
            tenant.key,
            self.where(tenant),
            "; ".join(problems),
            "; further invalid records of this stream and tenant are only counted"
            if count == INVALID_LOGGED
            else "",
            level=logging.WARNING,
        )

    def tenant_rows(self, context: Context | None) -> Generator[dict[str, t.Any], None, None]:
        """This stream's rows for one tenant."""
        # Closed on the way out, also when a row fails: its walk's pages are let go then,
        # not kept (with their memory) by the frames the tenant's error holds on to.
        with contextlib.closing(self.api_records(context)) as records:
            for record in records:
                yield from self.rows(record)


class PairedStream(LmsStream):
    """A stream that shares one walk of its endpoint with a partner stream.

    An API may nest one stream's rows in another's records (progress in users, say).
    When both streams of a pair are selected the endpoint is walked once: the stream
    synced first (the SDK syncs in name order) writes its partner's rows to a temporary
    spool file per tenant, which the partner then reads. Memory stays flat and each stream
    keeps the SDK's own sync, state and SCHEMA handling.
    """

    partner: t.ClassVar[str]
    #: The partner this stream's walks are feeding, if any.
    walk_partner: PairedStream | None = None

    def plan_partner(self, fed: set[str]) -> set[str]:
        # Called in sync order: the first stream of a selected pair walks for both.
        partner = self.run.streams.get(self.partner)
        self.walk_partner = (
            partner
            if isinstance(partner, PairedStream) and partner.selected and partner.name not in fed
            else None
        )
        return {self.walk_partner.name} if self.walk_partner is not None else set()

    def tenant_rows(self, context: Context | None) -> Generator[dict[str, t.Any], None, None]:
        tenant = self.tenant(context)
        spool = self.run.spools.pop((self.name, tenant.key), None)
        if spool is not None:
            yield from spool.read()
            return
        self.start_walks()  # once per run: decides walk_partner
        feed = self.walk_partner
        if feed is None:
            yield from super().tenant_rows(context)
            return
        spool = Spool()
        try:
            with contextlib.closing(self.api_records(context)) as records:  # as above
                for record in records:
                    spool.write(feed.rows(record))
                    yield from self.rows(record)
            self.run.spools[feed.name, tenant.key], spool = spool, None
        finally:
            if spool is not None:  # this walk failed (and so did its tenant)
                spool.close()


def transport_cause(exc: BaseException) -> str:
    """The cause of a transport failure in a few words (`[Errno 111] Connection refused`)."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] [^'\"()]+", r"Read timed out", r"Connection aborted\.?"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and str(cause):
        return transport_cause(cause)
    return text[:200] or "no complete response"


def _decode_or_none(response: requests.Response) -> t.Any:
    try:
        return decode_json(response.content) if response.content else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None

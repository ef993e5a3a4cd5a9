"""How a stream reads its tenants' pages: it plans the walks, fetches, and hands records on.

When the first stream starts its sync, the walks of every selected stream for every
tenant are planned here (in the SDK's sync order, everything a walk reads from the state
prepared in the main thread) and handed to the run's pool (walking.py). A walk fetches each
page through the stream's transport (transport.py) with the request the SDK's hooks build;
the main thread reads the pages back in order and decodes each once.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t
from functools import cached_property
from http import HTTPStatus

import msgspec
from singer_sdk import metrics
from singer_sdk.streams.rest import PageContext

from tap_lms_unified.errors import (
    BadDataError,
    FilterRefusedError,
    PageSizeRejectedError,
    UnreadableRecord,
)
from tap_lms_unified.incremental import Incremental
from tap_lms_unified.paging import CursorPaginator, OffsetPaging
from tap_lms_unified.sdk_private import SdkStream
from tap_lms_unified.shaping import decode_json, json_type_name
from tap_lms_unified.transport import Transport
from tap_lms_unified.walking import CursorWalk, OffsetWalk, Walk

if t.TYPE_CHECKING:
    from collections.abc import Generator, Iterator

    import requests
    from singer_sdk.helpers.types import Context

    from tap_lms_unified.run import Run, Tenant


class ReadingStream(SdkStream):
    """The reading side of a stream: walks, pages, records (see LmsStream for the rest)."""

    run: Run
    tenant_field: str

    def tenant(self, context: Context | None) -> Tenant:
        if not context:
            raise ValueError(f"stream {self.name} needs a tenant context")
        return self.run.tenants[context[self.tenant_field]]

    @property
    def endpoint(self) -> str:
        """`GET <path>` as named in logs and errors."""
        return f"GET {self.path}"

    @cached_property
    def transport(self) -> Transport:
        return Transport(
            provider=self.run.provider,
            config=self.config,
            endpoint=self.endpoint,
            base_url=self.run.base_url,
            redact=self.run.redact,
            log=self.log,
            reachability=self.run.reachability,
            sender=self.run.sender,
            on_response=self.on_response,
        )

    @cached_property
    def incremental(self) -> Incremental:
        # The key the stream class declares: a full-table sync (the catalog's choice) still
        # filters by start_date.
        declared = getattr(type(self), "replication_key", None)
        return Incremental(
            stream=self.name,
            replication_key=declared if isinstance(declared, str) else None,
            where=self.run.provider.incremental,
            config=self.config,
            warn=self.run.warn_once,
        )

    # -- planning, in the main thread ---------------------------------------------------

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
        walks: list[Walk] = []
        for stream in self.owner.streams.values():  # the SDK's sync order
            if not isinstance(stream, ReadingStream) or not stream.selected:
                continue
            if stream.name in fed:
                continue
            fed.update(stream.plan_partner(fed))
            for context in stream.partitions or ():
                if stream.tenant(context).failure is None:
                    walks.append(stream.walk_of(context))
        run.pool.start(walks)

    def plan_partner(self, fed: set[str]) -> set[str]:
        """The streams this stream's walks also feed (see PairedStream)."""
        return set()

    def own_start(self, context: Context) -> t.Any:
        """Where this stream alone would start a tenant's walk (incremental.py)."""
        partition = self.state_manager.find(context)
        return self.incremental.own_start(
            partition, context[self.tenant_field], full_table=self.full_table
        )

    def walk_start(self, context: Context) -> t.Any:
        """Where this stream's walk of a tenant starts (a paired walk: the earlier start)."""
        return self.own_start(context)

    def plan(self, context: Context) -> None:
        """Decide where a tenant's walk of this stream starts (main thread, before it runs)."""
        self.incremental.starts[context[self.tenant_field]] = self.walk_start(context)

    def walk_of(self, context: Context) -> Walk:
        """A tenant's walk of this stream, its filter decided now (main thread)."""
        tenant = self.tenant(context)
        self.plan(context)
        paging = self.run.provider.paging
        if not isinstance(paging, OffsetPaging):
            return CursorWalk(self.name, tenant.key, lambda: self.cursor_pages(context))
        counter = self.get_http_request_counter()
        counter.__enter__()
        counter.with_context(context)
        lock = threading.Lock()
        size = self.run.page_size

        def fetch(page: int) -> bytes:
            response = self.fetch_page(context, page * size, first=page == 0)
            with lock:
                counter.increment()
            return response.content

        walk = OffsetWalk(
            self.name,
            tenant.key,
            fetch=fetch,
            ids=paging.ids,
            limit=size,
            width=int(self.config["max_concurrency"]),
            endpoint=self.endpoint,
        )
        walk.on_finish = lambda: counter.__exit__(None, None, None)
        return walk

    # -- fetching, in the pool's workers ----------------------------------------------

    def cursor_pages(self, context: Context) -> Iterator[bytes]:
        """One walk of a cursor-paged endpoint for one tenant: each page's raw body.

        The SDK's `request_records` loop (request counter and sync costs included), kept
        page-aware so that the raw page is handed from a worker to the main thread.
        """
        paginator = CursorPaginator(self.transport.cursor_of, self.endpoint)
        with self.get_http_request_counter() as request_counter:
            request_counter.with_context(context)
            while not paginator.finished:
                token = paginator.current_value
                response = self.fetch_page(context, token, first=not paginator.count)
                request_counter.increment()
                yield response.content
                paginator.advance(response)

    def fetch_page(self, context: Context, token: t.Any, *, first: bool) -> requests.Response:
        """One page, its request built by the SDK's hooks, sent through the transport.

        A refused page size steps down (once per run) and the page is asked again; an
        integration refusing the incremental filter on the first page gets the walk in full.
        """
        tenant = self.tenant(context)
        while True:
            size = self.run.page_size
            page = PageContext(stream_context=context, next_page_token=token)
            request = self.get_http_request(page=page)
            prepared = self.build_prepared_request(
                method=request.method,
                url=request.url,
                params=request.encode_params(),
                headers=request.headers,
            )
            try:
                response = self.transport.send(prepared, tenant)
            except PageSizeRejectedError:
                if self.run.step_down_page_size(size):
                    continue  # the same page again, smaller
                raise
            except FilterRefusedError as exc:
                if first and self.incremental.refused(tenant.key):
                    self.run.warn_once(
                        f"Tenant {tenant.key}: {exc}; the integration does not take the "
                        f"incremental filter: {self.name} is read in full for this tenant."
                    )
                    continue
                raise
            except RecursionError as exc:
                msg = f"{self.endpoint}: the JSON body is nested too deeply to read"
                raise BadDataError(msg) from exc
            self.update_sync_costs(prepared, response, context)
            return response

    def on_response(self, response: requests.Response, tenant: Tenant) -> None:
        """Every answer: the SDK's request-duration metric."""
        ok = response.status_code < HTTPStatus.BAD_REQUEST
        self.log_request(
            response,
            {
                metrics.Tag.STREAM: self.name,
                metrics.Tag.ENDPOINT: self.path,
                metrics.Tag.HTTP_STATUS_CODE: response.status_code,
                metrics.Tag.STATUS: metrics.Status.SUCCEEDED if ok else metrics.Status.FAILED,
                metrics.Tag.CONTEXT: {self.tenant_field: tenant.key},
            },
        )

    # -- from walks to records, in the main thread ------------------------------------

    def api_records(self, context: Context | None) -> Generator[dict[str, t.Any], None, None]:
        """This tenant's API records, from its prefetched walk."""
        self.start_walks()
        tenant = self.tenant(context)
        pool = self.run.pool
        if not pool.has(self.name, tenant.key):  # not planned: walk it now
            pool.start([self.walk_of(dict(context or {}))])
        key = tenant.key
        # Where the walk is, for messages about a record: [page, record], from 1.
        position = self.positions[key] = [0, 0]
        with contextlib.closing(pool.pages(self.name, key)) as pages:  # see tenant_rows
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
            return self.run.provider.paging.envelope.page(decode_json(page))[0]
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

    @property
    def full_table(self) -> bool:
        raise NotImplementedError

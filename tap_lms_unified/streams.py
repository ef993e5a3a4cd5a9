"""The stream base every provider's streams build on, and paired streams.

A stream's endpoint, key, bookmark and schema are declared in its provider's module; this
module holds what they share: the SDK's public hooks (URL, parameters, headers, auth,
catalog, full-table syncs) and tenant isolation (a tenant's failure ends that tenant
only). How pages are walked and fetched is in reading.py; every private SDK use in
sdk_private.py.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t
from functools import cached_property
from urllib.parse import quote

from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.singerlib.catalog import REPLICATION_FULL_TABLE

from tap_lms_unified.errors import (
    TENANT_ERRORS,
    BadDataError,
    UnreadableRecord,
    UnsupportedModelError,
    WalkEndedEarly,
)
from tap_lms_unified.incremental import earliest, signpost_value
from tap_lms_unified.reading import ReadingStream
from tap_lms_unified.shaping import Shaper, json_type_name
from tap_lms_unified.walking import Spool

if t.TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Iterator

    import requests
    from singer_sdk import Tap
    from singer_sdk.authenticators import APIAuthenticatorBase
    from singer_sdk.helpers.types import Context
    from singer_sdk.singerlib import Catalog

    from tap_lms_unified.run import Run, Tenant

#: Invalid records (no usable primary key) logged per stream and tenant; the rest are counted.
INVALID_LOGGED = 20


class LmsStream(ReadingStream):
    """One provider endpoint for every tenant of the run, rows shaped to the schema."""

    # `shape` puts every record in the schema's shape and type (timestamps included), so
    # the SDK's per-value conformance pass (40% of a run's CPU) has nothing left to do.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE
    #: API fields that go to a partner stream, so not in this schema (no warning).
    split_off: t.ClassVar[frozenset[str]] = frozenset()
    #: Fields that are timestamps in our schema, normalised to UTC ISO-8601.
    datetime_fields: t.ClassVar[tuple[str, ...]] = ()
    # Providers document no order: bookmarks move only when a tenant's walk completes.
    is_sorted = False

    def __init__(self, tap: Tap, run: Run) -> None:
        super().__init__(tap=tap)
        self.run = run
        self.owner = tap
        self.tenant_field = run.provider.tenancy.field
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
            # Keys: a record without a usable one is not emitted (tenant_records); the
            # tenant field is set there.
            unchecked=(*self.primary_keys, self.tenant_field),
            warn=lambda msg, *args: self.log(msg, *args, level=logging.WARNING),
        )

    # -- SDK hooks -------------------------------------------------------------------

    @property
    def url_base(self) -> str:
        return self.run.base_url

    def get_url(self, context: Context | None) -> str:
        # A tenant that goes in the path is one segment, whatever characters it has.
        url = self.url_base + self.path
        if context and "{" in url:
            url = url.replace(f"{{{self.tenant_field}}}", quote(context[self.tenant_field], ""))
        return url

    @cached_property
    def authenticator(self) -> APIAuthenticatorBase:
        return self.run.provider.auth.authenticator(self.config["api_key"])

    @property
    def http_headers(self) -> dict[str, t.Any]:
        return {"User-Agent": self.run.user_agent, "Accept": "application/json"}

    @property
    def partitions(self) -> list[dict[str, t.Any]]:
        # One partition per tenant: its own bookmarks, named without secrets.
        return self.run.partitions

    def get_http_request(self, *, page: t.Any) -> t.Any:
        request = super().get_http_request(page=page)
        request.headers.update(self.tenant(page.stream_context).headers)
        return request

    def get_url_params(self, context: Context | None, next_page_token: t.Any) -> dict[str, t.Any]:
        # Every filter is re-sent with every page, as the providers require.
        paging = self.run.provider.paging
        params: dict[str, t.Any] = {paging.size_param: self.run.page_size}
        params.update(self.run.static_params)
        if context:
            params.update(self.incremental.params(context[self.tenant_field]))
        params.update(paging.token_params(next_page_token))
        return params

    @property
    def requests_session(self) -> requests.Session:
        # Only prepares requests; they are sent through the run's sender (tenant budgets).
        return self.run.prepare_session

    @property
    def timeout(self) -> float:  # type: ignore[override]
        return float(self.config["request_timeout"])

    def get_replication_key_signpost(self, context: Context | None = None) -> t.Any:
        # Same string format as the records', because the SDK compares bookmarks as strings.
        return signpost_value(super().get_replication_key_signpost(context))

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
            self.stamp_version(self.run.version)
        yield from self.tenant_records(context)
        if activate and context == self.partitions[-1]:
            incomplete = self.run.not_read_in_full(self.name)
            if incomplete:
                self.log(
                    "Not activating the new version of %s: tenants %s were not read in "
                    "full, and their rows must not be marked deleted.",
                    self.name,
                    ", ".join(incomplete),
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
                self.activate_version(self.run.version)

    def filtered(self) -> bool:
        """Whether this run's walks of this stream left records out (a date filter)."""
        refused = self.incremental.refusals
        return any(
            self.own_start(context) is not None and context[self.tenant_field] not in refused
            for context in self.partitions
        )

    # -- tenant isolation -------------------------------------------------------------

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
                row[field] = key
                if only:
                    value = row.get(only)
                    usable = type(value) is str and value != ""
                else:
                    usable = all(type(row.get(k)) is str and row.get(k) for k in keys)
                if not usable:
                    self.reject(tenant, row)
                    continue
                self._dry_run_rows += 1
                count += 1
                yield row
        except (UnsupportedModelError, WalkEndedEarly) as exc:
            # Not a failure of the tenant: what was read stays, the bookmark does not move.
            if limit is not None and isinstance(exc, UnsupportedModelError):
                raise
            state.pop("progress_markers", None)
            self.run.not_complete(tenant, self.name, exc)
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
            tenant.done += 1

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
        partner = self.owner.streams.get(self.partner)
        self.walk_partner = (
            partner
            if isinstance(partner, PairedStream) and partner.selected and partner.name not in fed
            else None
        )
        return {self.walk_partner.name} if self.walk_partner is not None else set()

    def walk_start(self, context: Context) -> t.Any:
        # A walk that also feeds the partner starts where the earlier of the two needs.
        own = self.own_start(context)
        partner = self.walk_partner
        return own if partner is None or own is None else earliest(own, partner.own_start(context))

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

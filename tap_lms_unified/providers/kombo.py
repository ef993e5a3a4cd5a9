"""Kombo's unified LMS API: everything the tap knows about it, in one place.

| stream              | endpoint                      | key          | bookmark        |
|---------------------|-------------------------------|--------------|-----------------|
| users               | GET /lms/users                | id           | changed_at      |
| progress            | users[].progress[] (legacy)   | progress_id  | user_changed_at |
| course_progressions | GET /lms/course-progressions  | id           | changed_at      |
| courses             | GET /lms/courses              | id           | changed_at      |
| course_revisions    | courses[].revisions[]         | id           | changed_at      |
| skills              | GET /lms/skills               | id           | changed_at      |

Headers `Authorization: Bearer <api_key>` and `X-Integration-Id`; envelope
`{"status","data":{"next","results"}}`; errors `{"error":{"code","title","message","log_url"}}`;
rate limits in `ratelimit-remaining`/`ratelimit-reset` (seconds from now).
"""

from __future__ import annotations

import typing as t
from datetime import UTC, datetime, timedelta
from functools import cached_property
from http import HTTPStatus
from importlib.resources import files

import msgspec
from singer_sdk import SchemaDirectory, StreamSchema
from singer_sdk import typing as th

from tap_lms_unified.errors import UnreadableRecord
from tap_lms_unified.provider import Provider, TenantSpec, envelope_cursor
from tap_lms_unified.shaping import json_type_name, parse_utc, utc_iso
from tap_lms_unified.state import bookmark_of, partition_of
from tap_lms_unified.streams import LmsStream, PairedStream

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from singer_sdk.helpers.types import Context


class _Data(msgspec.Struct):
    results: list[msgspec.Raw]  # checked to be a list of JSON values, not decoded
    next: t.Any


class _Envelope(msgspec.Struct):
    data: _Data


_ENVELOPE = msgspec.json.Decoder(_Envelope)

BASE_URLS = {"eu": "https://api.kombo.dev/v1", "us": "https://api.us.kombo.dev/v1"}
SCHEMAS = SchemaDirectory(files("tap_lms_unified") / "schemas" / "kombo")
COMMON_DATETIMES = ("changed_at", "remote_created_at", "remote_deleted_at")


def format_updated_after(moment: datetime) -> str:
    """Kombo's filter format: `2024-01-01T00:00:00.000Z` (it rejects `+00:00`)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class KomboStream(LmsStream):
    """A Kombo LMS list endpoint: `{"status","data":{"next","results"}}`, incremental."""

    schema = StreamSchema(SCHEMAS)
    primary_keys = ("id",)
    replication_key = "changed_at"
    is_sorted = False  # Kombo documents no order: bookmarks move only when a stream completes
    datetime_fields: t.ClassVar[tuple[str, ...]] = COMMON_DATETIMES

    def get_replication_key_signpost(self, context: Context | None = None) -> t.Any:
        # Same string format as the records', because the SDK compares bookmarks as strings.
        signpost = super().get_replication_key_signpost(context)
        return utc_iso(signpost.isoformat()) if isinstance(signpost, datetime) else signpost

    def own_start(self, context: Context | None) -> datetime | None:
        """Where this tenant's walk starts: the bookmark minus the lookback, or start_date.

        Read from state directly (not the SDK's starting marker) because a walk also has
        to know its partner's start before the partner's own sync has begun. A bookmark
        that is no timestamp, or lies in the future, is ignored with a warning: the
        stream is then read in full once (or from start_date), so nothing is lost.
        """
        candidates = []
        # A full-table sync (forced in the catalog) ignores the bookmark; start_date, the
        # user's own lower bound, still applies (and then no version is activated).
        bookmark = None if self.full_table else self.bookmark(context)
        if bookmark is not None:
            lookback = timedelta(minutes=int(self.config["lookback_window_minutes"]))
            candidates.append(bookmark - lookback)
        if self.config.get("start_date"):
            candidates.append(parse_utc(utc_iso(self.config["start_date"]) or ""))
        return max(candidates) if candidates else None

    def bookmark(self, context: Context | None) -> datetime | None:
        """This tenant's usable bookmark, if any."""
        state = partition_of(self.tap_state, self.name, context)  # read only: see partition_of
        value = bookmark_of(state, str(self.replication_key))
        if value is None:
            return None
        tenant = self.tenant(context).key
        parsed = utc_iso(value) if isinstance(value, str) else None
        if parsed is None:
            self.run.warn_once(
                f"Stream {self.name}, tenant {tenant}: the bookmark {str(value)[:40]!r} is "
                "not a timestamp; ignored, so the stream is read in full once."
            )
            return None
        moment = parse_utc(parsed)
        if moment > datetime.now(UTC):
            self.run.warn_once(
                f"Stream {self.name}, tenant {tenant}: the bookmark {parsed} lies in the "
                "future; ignored, so the stream is read in full once."
            )
            return None
        return moment

    def walk_start(self, context: Context | None) -> datetime | None:
        """`updated_after` of this tenant's walk."""
        return self.own_start(context)

    def filtered(self) -> bool:
        # This stream's rows come from walks that start no later than its own start (a
        # shared walk starts at the earlier of the pair's), so: no own start, no filter.
        return any(self.own_start(context) is not None for context in self.partitions)

    def get_url_params(
        self, context: Context | None, next_page_token: str | None
    ) -> dict[str, t.Any]:
        # Every filter is re-sent with every cursor, as Kombo requires.
        params: dict[str, t.Any] = {
            "page_size": self.run.page_size,
            "include_deleted": "true" if self.config["include_deleted"] else "false",
        }
        start = self.walk_starts[context[self.tenant_field]] if context else None
        if start is not None:
            params["updated_after"] = format_updated_after(start)
        if next_page_token:
            params["cursor"] = next_page_token
        return params

    def prepare_walk(self, context: dict[str, t.Any]) -> None:
        # Bookmarks are read before the walks start: worker threads never touch the
        # tap's state.
        self.walk_starts[context[self.tenant_field]] = self.walk_start(context)

    @cached_property
    def walk_starts(self) -> dict[str, datetime | None]:
        """`updated_after` of each tenant's walk, by tenant."""
        return {}

    def rows(self, record: dict[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        row = self.shape(record)
        row["_sdc_deleted_at"] = row.get("remote_deleted_at")
        yield row


class KomboPairedStream(KomboStream, PairedStream):
    """One of a pair of Kombo streams read from one walk of the same endpoint."""

    def walk_start(self, context: Context | None) -> datetime | None:
        # A walk that also feeds the partner starts where the earlier of the two needs.
        own = self.own_start(context)
        partner = self.walk_partner
        if not isinstance(partner, KomboStream) or own is None:
            return own
        other = partner.own_start(context)
        return None if other is None else min(own, other)


class UsersStream(KomboPairedStream):
    """Learners. The legacy shape nests `progress[]`, which goes to the progress stream."""

    name = "users"
    path = "/lms/users"
    partner = "progress"
    split_off = frozenset({"progress"})


class ProgressStream(KomboPairedStream):
    """Legacy `users[].progress[]` items, one row each, with their user's id."""

    name = "progress"
    path = "/lms/users"
    partner = "users"
    primary_keys = ("progress_id",)
    replication_key = "user_changed_at"
    datetime_fields = ("enrollment_date", "completion_date", "user_changed_at", "_sdc_deleted_at")

    def rows(self, record: dict[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        items = record.get("progress")
        if not items:  # the current user shape has no progress
            return
        if type(items) is not list:
            msg = f"'progress' of user {record.get('id')!r} is {json_type_name(items)}"
            raise UnreadableRecord(msg + ", not an array")
        # The user's timestamps are converted once per user, and set after shaping (as
        # strings or null they fit the schema), not converted again for every item.
        changed_at = utc_iso(record.get("changed_at"))
        deleted_at = utc_iso(record.get("remote_deleted_at"))
        user_id = record["id"]
        shape = self.shape
        for item in items:
            if type(item) is not dict:
                msg = f"an item of 'progress' of user {record.get('id')!r} is "
                raise UnreadableRecord(msg + f"{json_type_name(item)}, not an object")
            # The item itself (nothing else reads it): the shaped row is a new dict.
            item["user_id"] = user_id
            item["user_changed_at"] = item["_sdc_deleted_at"] = None
            row = shape(item)
            row["user_changed_at"] = changed_at
            row["_sdc_deleted_at"] = deleted_at
            yield row


class CourseProgressionsStream(KomboStream):
    """Enrolments and completions of users in course revisions."""

    name = "course_progressions"
    path = "/lms/course-progressions"
    datetime_fields = (*COMMON_DATETIMES, "enrolled_at", "completed_at")


class CoursesStream(KomboPairedStream):
    """Courses with their `provider`; their `revisions[]` go to course_revisions."""

    name = "courses"
    path = "/lms/courses"
    partner = "course_revisions"
    split_off = frozenset({"revisions"})


class CourseRevisionsStream(KomboPairedStream):
    """`courses[].revisions[]`, each with its `course_id` and `skill_assignments`.

    Kombo returns a course for `updated_after` when one of its revisions changed, without
    moving the course's own changed_at; the revision's changed_at is this bookmark.
    """

    name = "course_revisions"
    path = "/lms/courses"
    partner = "courses"

    def rows(self, record: dict[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        course_deleted = record.get("remote_deleted_at")
        revisions = record.get("revisions")
        if not revisions:
            return
        if type(revisions) is not list:
            msg = f"'revisions' of course {record.get('id')!r} is {json_type_name(revisions)}"
            raise UnreadableRecord(msg + ", not an array")
        for revision in revisions:
            if type(revision) is not dict:
                msg = f"a revision of course {record.get('id')!r} is {json_type_name(revision)}"
                raise UnreadableRecord(msg + ", not an object")
            row = dict(revision)
            row.setdefault("course_id", record["id"])
            row = self.shape(row)
            row["_sdc_deleted_at"] = row["remote_deleted_at"] or utc_iso(course_deleted)
            yield row


class SkillsStream(KomboStream):
    """Skills that course revisions are assigned."""

    name = "skills"
    path = "/lms/skills"


STREAMS: tuple[type[KomboStream], ...] = (
    UsersStream,
    ProgressStream,
    CourseProgressionsStream,
    CoursesStream,
    CourseRevisionsStream,
    SkillsStream,
)


class Kombo(Provider):
    """Kombo: one integration per customer, incremental streams, deletions as tombstones."""

    name = "kombo"
    label = "Kombo"
    page_size_default = 250
    page_size_max = 250
    tenant_field = "integration_id"
    tenant_setting = "integration_id"
    reset_is_epoch = False  # `ratelimit-reset` is seconds from now
    streams = STREAMS
    tenant_properties = (th.Property("integration_id", th.StringType),)
    settings = (
        th.Property(
            "integration_id",
            th.StringType,
            title="Integration ID (Kombo)",
            description="Kombo only, required: the customer's integration, sent as "
            "`X-Integration-Id` (e.g. `docebo:8Xi6iZrwusZqJmDGXs49GBmJ`).",
        ),
        th.Property(
            "region",
            th.StringType(allowed_values=list(BASE_URLS)),
            default="eu",
            title="Region (Kombo)",
            description="Kombo only: `eu` (api.kombo.dev) or `us` (api.us.kombo.dev).",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="Kombo: the earliest `changed_at` to fetch on a first run (no "
            "bookmark yet). Bindbee has no such filter: ignored with a warning.",
        ),
        th.Property(
            "include_deleted",
            th.BooleanType,
            default=True,
            title="Include deleted (Kombo)",
            description="Kombo only: also fetch records deleted in the source system; they "
            "carry `remote_deleted_at`, copied to `_sdc_deleted_at` so targets mark them "
            "deleted.",
        ),
        th.Property(
            "lookback_window_minutes",
            th.IntegerType,
            default=5,
            title="Lookback window (minutes)",
            description="Kombo only: overlap subtracted from the bookmark when building "
            "`updated_after`, against clock skew and late writes.",
        ),
    )

    def base_url(self, config: Mapping[str, t.Any]) -> str:
        return BASE_URLS[config["region"]]

    def tenants(self, config: Mapping[str, t.Any]) -> list[TenantSpec]:
        ids = [config.get("integration_id")]
        ids += [i.get("integration_id") for i in config.get("integrations") or ()]
        return [TenantSpec(str(i), {"X-Integration-Id": str(i)}) for i in ids if i]

    def check(self, config: Mapping[str, t.Any]) -> list[str]:
        errors = []
        integrations = config.get("integrations") or []
        for position, item in enumerate(integrations):
            if not str(item.get("integration_id") or "").strip():
                errors.append(f"'integrations[{position}]' needs 'integration_id' (provider kombo)")
        if not str(config.get("integration_id") or "").strip() and not integrations:
            errors.append(
                "'integration_id' is required when provider is 'kombo' (sent as "
                "X-Integration-Id), or list tenants in 'integrations'"
            )
        lookback = config["lookback_window_minutes"]
        if lookback is not None and lookback < 0:
            errors.append(f"'lookback_window_minutes' must not be negative, got {lookback!r}")
        if config.get("start_date"):
            try:
                parse_utc(str(config["start_date"]))
            except ValueError:
                errors.append(f"'start_date' is not an ISO-8601 date-time: {config['start_date']}")
        return errors

    def page(self, body: t.Any) -> tuple[list[t.Any], str | None]:
        data = body["data"]
        results, cursor = data["results"], data["next"]
        if not isinstance(results, list):
            raise TypeError("results is not a list")
        return results, (str(cursor) if cursor else None)

    def cursor(self, content: bytes) -> str | None:
        cursor = envelope_cursor(_ENVELOPE, content).data.next
        return str(cursor) if cursor else None

    def error_details(self, body: t.Any) -> tuple[str | None, str]:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return None, ""
        parts = [str(error.get(k)) for k in ("title", "message") if error.get(k)]
        message = " — ".join(dict.fromkeys(parts))
        if error.get("log_url"):
            message += f" (log: {error['log_url']})"
        return (str(error["code"]) if error.get("code") else None), message

    def not_ready(self, status: int, code: str | None) -> bool:
        # 409 (older: 503) with INTEGRATION.SETUP_SYNC_PENDING etc.: the first sync runs.
        code = code or ""
        retryable = status == HTTPStatus.TOO_MANY_REQUESTS or status >= 500
        return (
            status == HTTPStatus.CONFLICT
            or code.startswith("INTEGRATION.SETUP")
            or (retryable and code.startswith("INTEGRATION."))
        )


PROVIDER = Kombo()

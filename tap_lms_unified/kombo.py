"""Kombo's unified LMS API: endpoints, keys, bookmarks and schemas of each stream.

| stream              | endpoint                      | key          | bookmark        |
|---------------------|-------------------------------|--------------|-----------------|
| users               | GET /lms/users                | id           | changed_at      |
| progress            | users[].progress[] (legacy)   | progress_id  | user_changed_at |
| course_progressions | GET /lms/course-progressions  | id           | changed_at      |
| courses             | GET /lms/courses              | id           | changed_at      |
| course_revisions    | courses[].revisions[]         | id           | changed_at      |
| skills              | GET /lms/skills               | id           | changed_at      |
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timedelta
from functools import cached_property
from importlib.resources import files

from singer_sdk import SchemaDirectory, StreamSchema

from tap_lms_unified.client import LmsStream, WalkStream, format_updated_after, start_of, utc_iso

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from singer_sdk.helpers.types import Context

BASE_URLS = {"eu": "https://api.kombo.dev/v1", "us": "https://api.us.kombo.dev/v1"}
SCHEMAS = SchemaDirectory(files("tap_lms_unified") / "schemas" / "kombo")
COMMON_DATETIMES = ("changed_at", "remote_created_at", "remote_deleted_at")


class KomboStream(LmsStream):
    """A Kombo LMS list endpoint: `{"status","data":{"next","results"}}`, incremental."""

    schema = StreamSchema(SCHEMAS)
    primary_keys = ("id",)
    tenant_field = "integration_id"
    replication_key = "changed_at"
    is_sorted = False  # Kombo documents no order: bookmarks move only when a stream completes
    datetime_fields: t.ClassVar[tuple[str, ...]] = COMMON_DATETIMES

    def results(self, body: t.Any) -> list[dict]:
        results = body["data"]["results"]
        if not isinstance(results, list):
            raise TypeError("results is not a list")
        return results

    def next_cursor(self, body: t.Any) -> str | None:
        cursor = body["data"]["next"]
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

    def get_replication_key_signpost(self, context: Context | None = None) -> t.Any:
        # Same string format as the records', because the SDK compares bookmarks as strings.
        signpost = super().get_replication_key_signpost(context)
        return utc_iso(signpost.isoformat()) if isinstance(signpost, datetime) else signpost

    def own_start(self, context: Context | None) -> datetime | None:
        """This tenant's bookmark minus the lookback window, or start_date."""
        lookback = timedelta(minutes=int(self.config["lookback_window_minutes"]))
        return start_of(self, context, lookback)

    def walk_start(self, context: Context | None) -> datetime | None:
        """`updated_after` of this tenant's walk."""
        return self.own_start(context)

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        # Every filter is re-sent with every cursor, as Kombo requires.
        params: dict[str, t.Any] = {
            "page_size": self._tap.page_size,
            "include_deleted": "true" if self.config["include_deleted"] else "false",
        }
        start = self.walk_starts[context[self.tenant_field]] if context else None
        if start is not None:
            params["updated_after"] = format_updated_after(start)
        if next_page_token:
            params["cursor"] = next_page_token
        return params

    def prepare_walk(self, context: dict) -> None:
        # Bookmarks are read (and state partitions created, in tenant order) before the
        # walks start: worker threads never touch the tap's state.
        self.walk_starts[context[self.tenant_field]] = self.walk_start(context)

    @cached_property
    def walk_starts(self) -> dict[str, datetime | None]:
        """`updated_after` of each tenant's walk, by tenant."""
        return {}

    def normalise(self, record: dict) -> dict:
        record = super().normalise(record)
        record["_sdc_deleted_at"] = record.get("remote_deleted_at")
        return record


class KomboWalkStream(KomboStream, WalkStream):
    """One of a pair of Kombo streams read from one walk of the same endpoint."""

    def walk_start(self, context: Context | None) -> datetime | None:
        # A walk that also feeds the partner starts where the earlier of the two needs.
        own = self.own_start(context)
        partner = self.walk_partner
        if not isinstance(partner, KomboStream) or own is None:
            return own
        other = partner.own_start(context)
        return None if other is None else min(own, other)


class UsersStream(KomboWalkStream):
    """Learners. The legacy shape nests `progress[]`, which goes to the progress stream."""

    name = "users"
    path = "/lms/users"
    partner = "progress"
    split_off = frozenset({"progress"})


class ProgressStream(KomboWalkStream):
    """Legacy `users[].progress[]` items, one row each, with their user's id."""

    name = "progress"
    path = "/lms/users"
    partner = "users"
    primary_keys = ("progress_id",)
    replication_key = "user_changed_at"
    datetime_fields = ("enrollment_date", "completion_date", "user_changed_at", "_sdc_deleted_at")

    def rows(self, record: dict) -> Iterator[dict]:
        items = record.get("progress") or ()  # the current user shape has no progress
        changed_at = utc_iso(record.get("changed_at"))
        deleted_at = utc_iso(record.get("remote_deleted_at"))
        for item in items:
            row = dict(item)
            row["user_id"] = record["id"]
            row["user_changed_at"] = changed_at
            row["_sdc_deleted_at"] = deleted_at
            yield LmsStream.normalise(self, row)


class CourseProgressionsStream(KomboStream):
    """Enrolments and completions of users in course revisions."""

    name = "course_progressions"
    path = "/lms/course-progressions"
    datetime_fields = (*COMMON_DATETIMES, "enrolled_at", "completed_at")


class CoursesStream(KomboWalkStream):
    """Courses with their `provider`; their `revisions[]` go to course_revisions."""

    name = "courses"
    path = "/lms/courses"
    partner = "course_revisions"
    split_off = frozenset({"revisions"})


class CourseRevisionsStream(KomboWalkStream):
    """`courses[].revisions[]`, each with its `course_id` and `skill_assignments`.

    Kombo returns a course for `updated_after` when one of its revisions changed, without
    moving the course's own changed_at; the revision's changed_at is this bookmark.
    """

    name = "course_revisions"
    path = "/lms/courses"
    partner = "courses"

    def rows(self, record: dict) -> Iterator[dict]:
        course_deleted = record.get("remote_deleted_at")
        for revision in record.get("revisions") or ():
            row = dict(revision)
            row.setdefault("course_id", record["id"])
            row = self.normalise(row)
            if row["_sdc_deleted_at"] is None and course_deleted:
                row["_sdc_deleted_at"] = utc_iso(course_deleted)
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

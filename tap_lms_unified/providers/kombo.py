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
from http import HTTPStatus
from importlib.resources import files

from singer_sdk import SchemaDirectory, StreamSchema
from singer_sdk import typing as th

from tap_lms_unified.errors import UnreadableRecord
from tap_lms_unified.paging import CursorPaging, Envelope
from tap_lms_unified.provider import (
    DATE_TIME,
    IncrementalFilter,
    Provider,
    RateLimitHeaders,
    SchemaSource,
    SpecSource,
    Tenancy,
)
from tap_lms_unified.shaping import json_type_name, utc_iso
from tap_lms_unified.streams import LmsStream, PairedStream

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

SCHEMAS = SchemaDirectory(files("tap_lms_unified") / "schemas" / "kombo")
COMMON_DATETIMES = ("changed_at", "remote_created_at", "remote_deleted_at")

# Where the schemas come from (scripts/generate_schemas.py): the current spec, and the
# legacy one whose users nest `progress[]`; records in `data.results[]`.
CURRENT = "kombo/kombo-openapi.2026-05-01.api-evangelist.json"
LEGACY = "kombo/kombo-openapi.2025-11-19.acaloiaro-0.0.1.json"
RECORD = ("properties", "data", "properties", "results", "items")
DELETED = {"_sdc_deleted_at": DATE_TIME}  # `remote_deleted_at`, for targets


def model(path: str, *steps: str, spec: str = CURRENT) -> SpecSource:
    return SpecSource(spec, path, RECORD + steps)


#: The spec types `integration_fields[].value` as null: it is really any JSON value.
ANY_VALUE = frozenset({"integration_fields[].value"})


def source(
    *models: SpecSource,
    extras: Mapping[str, t.Any] = DELETED,
    any_json: frozenset[str] = frozenset(),
    date_times: frozenset[str] = frozenset(),
) -> SchemaSource:
    return SchemaSource(models, extras, any_json=any_json, date_times=date_times)


class KomboStream(LmsStream):
    """A Kombo LMS list endpoint: `{"status","data":{"next","results"}}`, incremental."""

    schema = StreamSchema(SCHEMAS)
    primary_keys = ("id",)
    replication_key = "changed_at"
    datetime_fields: t.ClassVar[tuple[str, ...]] = COMMON_DATETIMES

    def rows(self, record: dict[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        row = self.shape(record)
        row["_sdc_deleted_at"] = row.get("remote_deleted_at")
        yield row


class KomboPairedStream(KomboStream, PairedStream):
    """One of a pair of Kombo streams read from one walk of the same endpoint."""


class UsersStream(KomboPairedStream):
    """Learners. The legacy shape nests `progress[]`, which goes to the progress stream."""

    name = "users"
    path = "/lms/users"
    partner = "progress"
    split_off = frozenset({"progress"})
    schema_source = source(
        model("/lms/users"), model("/lms/users", spec=LEGACY), any_json=ANY_VALUE
    )


class ProgressStream(KomboPairedStream):
    """Legacy `users[].progress[]` items, one row each, with their user's id."""

    name = "progress"
    path = "/lms/users"
    partner = "users"
    primary_keys = ("progress_id",)
    replication_key = "user_changed_at"
    datetime_fields = ("enrollment_date", "completion_date", "user_changed_at", "_sdc_deleted_at")
    schema_source = source(
        model("/lms/users", "properties", "progress", "items", spec=LEGACY),
        extras={
            "user_id": {"type": ["string", "null"]},  # the parent user's id
            "user_changed_at": DATE_TIME,  # the parent user's changed_at (replication key)
            "_sdc_deleted_at": DATE_TIME,  # set when the parent user is deleted
        },
        # "Date when the user enrolled/completed": plain strings in the spec.
        date_times=frozenset({"enrollment_date", "completion_date"}),
    )

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
    schema_source = source(model("/lms/course-progressions"))
    datetime_fields = (*COMMON_DATETIMES, "enrolled_at", "completed_at")


class CoursesStream(KomboPairedStream):
    """Courses with their `provider`; their `revisions[]` go to course_revisions."""

    name = "courses"
    path = "/lms/courses"
    partner = "course_revisions"
    split_off = frozenset({"revisions"})
    schema_source = source(model("/lms/courses"), any_json=ANY_VALUE)


class CourseRevisionsStream(KomboPairedStream):
    """`courses[].revisions[]`, each with its `course_id` and `skill_assignments`.

    Kombo returns a course for `updated_after` when one of its revisions changed, without
    moving the course's own changed_at; the revision's changed_at is this bookmark.
    """

    name = "course_revisions"
    path = "/lms/courses"
    partner = "courses"
    # `course_id` is in the revision model already; it is added only if it disappears.
    schema_source = source(
        model("/lms/courses", "properties", "revisions", "items"),
        extras={"course_id": {"type": ["string", "null"]}, **DELETED},
        any_json=ANY_VALUE,
    )

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
    schema_source = source(model("/lms/skills"), any_json=ANY_VALUE)


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
    tenancy = Tenancy(
        field="integration_id",
        setting="integration_id",
        header="X-Integration-Id",
        description="the customer's integration, sent as `X-Integration-Id` (e.g. "
        "`docebo:8Xi6iZrwusZqJmDGXs49GBmJ`).",
    )
    paging = CursorPaging(Envelope(records=("data", "results"), cursor=("data", "next")))
    page_size_default = 250
    page_size_max = 250
    # Kombo documents neither inclusive nor exclusive: read as exclusive (one ms earlier).
    incremental = IncrementalFilter("updated_after", precision="ms")
    rate_limit = RateLimitHeaders("ratelimit-remaining", "ratelimit-reset", reset_is_epoch=False)
    regions: t.ClassVar[dict[str, str]] = {
        "eu": "https://api.kombo.dev/v1",
        "us": "https://api.us.kombo.dev/v1",
    }
    streams = STREAMS
    settings = (
        th.Property(
            "include_deleted",
            th.BooleanType,
            default=True,
            title="Include deleted (Kombo)",
            description="Kombo only: also fetch records deleted in the source system; they "
            "carry `remote_deleted_at`, copied to `_sdc_deleted_at` so targets mark them "
            "deleted.",
        ),
    )

    def params(self, config: Mapping[str, t.Any]) -> dict[str, str]:
        return {"include_deleted": "true" if config["include_deleted"] else "false"}

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

"""Bindbee's unified LMS API: everything the tap knows about it, in one place.

Every stream is `GET /api/lms/v1/<model>`, key `id`, full table: Bindbee's LMS endpoints
have no "changed since" filter and no tombstones, and `modified_at` moves whenever Bindbee
re-syncs a record, so it is carried as data, not used as a bookmark. Each run sends
ACTIVATE_VERSION so that targets soft-delete the rows that vanished from the API.

Headers `Authorization: Bearer <api_key>` and `x-connector-token` (a secret); envelope
`{"cursor","page_size","items"}`; errors `{"detail": str | [{loc, msg}]}`; a budget of 200
requests per minute per token, `X-RateLimit-Reset` in Unix seconds.
"""

from __future__ import annotations

import typing as t
from http import HTTPStatus
from importlib.resources import files

from singer_sdk import SchemaDirectory, StreamSchema
from singer_sdk import typing as th

from tap_lms_unified.paging import CursorPaging, Envelope
from tap_lms_unified.provider import (
    PageSizeRefusal,
    Provider,
    RateLimitHeaders,
    SchemaSource,
    SpecSource,
    Tenancy,
)
from tap_lms_unified.streams import LmsStream

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

SCHEMAS = SchemaDirectory(files("tap_lms_unified") / "schemas" / "bindbee")


def source(
    stream: str, date_times: frozenset[str] = frozenset(), numbers: frozenset[str] = frozenset()
) -> SchemaSource:
    """Each stream's own spec file and endpoint, named after it; records in `items[]`."""
    spec = f"bindbee/bindbee-{stream}-api-openapi.yml"
    model = SpecSource(spec, f"/api/lms/v1/{stream}", ("properties", "items", "items"))
    return SchemaSource((model,), date_times=date_times, numbers=numbers)


class BindbeeStream(LmsStream):
    """A Bindbee LMS list endpoint: `{"cursor","page_size","items"}`, full table."""

    schema = StreamSchema(SCHEMAS)
    primary_keys = ("id",)
    replication_key = None
    datetime_fields: t.ClassVar[tuple[str, ...]] = ("modified_at",)
    #: Relations sent as ids, or as objects when expanded: always emitted as ids. The one
    #: list of them: the schemas are generated from it (to-many where the spec has an array).
    relations: t.ClassVar[tuple[str, ...]] = ()

    @property
    def path(self) -> str:  # type: ignore[override]
        return f"/api/lms/v1/{self.name}"

    def rows(self, record: dict[str, t.Any]) -> Iterator[dict[str, t.Any]]:
        # Relations first: the shaper then checks the ids against the schema.
        for name in self.relations:
            value = record.get(name)
            if isinstance(value, dict):
                record[name] = value.get("id")
            elif isinstance(value, list):
                record[name] = [v.get("id") if isinstance(v, dict) else v for v in value]
        yield self.shape(record)


class UsersStream(BindbeeStream):
    name = "users"
    schema_source = source("users")


class EnrollmentsStream(BindbeeStream):
    name = "enrollments"
    datetime_fields = ("modified_at", "start_date")
    relations = ("user", "course", "completion")
    # Only `modified_at` is declared date-time in the spec.
    schema_source = source("enrollments", date_times=frozenset({"start_date"}))


class CompletionsStream(BindbeeStream):
    name = "completions"
    datetime_fields = ("modified_at", "started_at", "completed_at")
    relations = ("user", "course", "content")
    # `score` is an integer in the spec, but real systems send 87.5.
    schema_source = source(
        "completions",
        date_times=frozenset({"started_at", "completed_at"}),
        numbers=frozenset({"score"}),
    )


class CoursesStream(BindbeeStream):
    name = "courses"
    schema_source = source("courses")
    relations = ("contents", "skills", "categories", "instructors")


class ContentsStream(BindbeeStream):
    name = "contents"
    schema_source = source("contents")
    relations = ("courses", "skills", "categories")


class SkillsStream(BindbeeStream):
    name = "skills"
    schema_source = source("skills")


class CategoriesStream(BindbeeStream):
    name = "categories"
    schema_source = source("categories")


STREAMS: tuple[type[BindbeeStream], ...] = (
    UsersStream,
    EnrollmentsStream,
    CompletionsStream,
    CoursesStream,
    ContentsStream,
    SkillsStream,
    CategoriesStream,
)


class Bindbee(Provider):
    """Bindbee: one connector token per customer, full-table streams, a per-token budget."""

    name = "bindbee"
    label = "Bindbee"
    tenancy = Tenancy(
        field="connector_name",
        setting="connector_token",
        header="x-connector-token",
        secret=True,
        name_setting="connector_name",
        anonymous_prefix="connector",
        description="the customer's connector token, sent as `x-connector-token`. A secret.",
        name_description="a stable, non-secret name for `connector_token`, written to every "
        "record as `connector_name` and used in state and logs. Default: `connector-` + a "
        "short hash of the token.",
    )
    paging = CursorPaging(Envelope(records=("items",), cursor=("cursor",)))
    # The spec allows 200 per page; older docs said 100. With a budget of requests per
    # minute, rows per minute = budget x page size: ask for 200, step down once on a 422.
    page_size_default = 200
    page_size_max = 200
    page_size_refusal = PageSizeRefusal(
        statuses=frozenset({HTTPStatus.UNPROCESSABLE_ENTITY}), fallback=100
    )
    rate_limit = RateLimitHeaders("x-ratelimit-remaining", "x-ratelimit-reset", reset_is_epoch=True)
    regions: t.ClassVar[dict[str, str]] = {"default": "https://api.bindbee.dev"}
    # The only way a target learns that a Bindbee record was deleted.
    activate_versions_by_default = True
    streams = STREAMS
    settings = (
        th.Property(
            "include_raw_data",
            th.BooleanType,
            default=False,
            title="Include raw data (Bindbee)",
            description="Bindbee only: ask for `raw_data`, the source system's original "
            "record (large).",
        ),
        th.Property(
            "include_custom_fields",
            th.BooleanType,
            default=True,
            title="Include custom fields (Bindbee)",
            description="Bindbee only: ask for `custom_fields`.",
        ),
        th.Property(
            "max_requests_per_minute",
            th.IntegerType,
            default=200,
            title="Max requests per minute (Bindbee)",
            description="Bindbee only: the tap stays under this many requests in any 60 s "
            "window per connector token (Bindbee's budget is 200).",
        ),
    )

    def check_own(self, config: Mapping[str, t.Any]) -> list[str]:
        value = config["max_requests_per_minute"]
        if value <= 0:
            return [f"'max_requests_per_minute' must be greater than 0, got {value!r}"]
        return []

    def requests_per_minute(self, config: Mapping[str, t.Any]) -> int | None:
        return int(config["max_requests_per_minute"])

    def params(self, config: Mapping[str, t.Any]) -> dict[str, str]:
        return {
            "include_raw_data": "true" if config["include_raw_data"] else "false",
            "include_custom_fields": "true" if config["include_custom_fields"] else "false",
        }

    def error_details(self, body: t.Any) -> tuple[str | None, str]:
        detail = body.get("detail") if isinstance(body, dict) else None
        if isinstance(detail, list):  # FastAPI validation errors (422)
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc") or ())
                    parts.append(f"{where}: {item.get('msg', item)}")
                else:
                    parts.append(str(item))
            return None, "; ".join(parts)
        return None, str(detail) if detail else ""

    def error_hint(self, status: int) -> str:
        if status == HTTPStatus.FORBIDDEN:
            return (
                " — the connector token was refused for the LMS API: it may belong to a "
                "connector of another category (HRIS, ATS, ...) or be revoked"
            )
        return super().error_hint(status)


PROVIDER = Bindbee()

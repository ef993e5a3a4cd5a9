"""Bindbee's unified LMS API: endpoints, keys and schemas of each stream.

Every stream is `GET /api/lms/v1/<model>`, key `id`, full table: Bindbee's LMS endpoints
have no "changed since" filter and no tombstones, and `modified_at` moves whenever Bindbee
re-syncs a record, so it is carried as data, not used as a bookmark. Each run sends
ACTIVATE_VERSION so that targets soft-delete the rows that vanished from the API.
"""

from __future__ import annotations

import logging
import typing as t
from http import HTTPStatus
from importlib.resources import files

from singer_sdk import SchemaDirectory, StreamSchema

from tap_lms_unified.client import LmsStream

if t.TYPE_CHECKING:
    import requests
    from singer_sdk.helpers.types import Context

BASE_URL = "https://api.bindbee.dev"
SCHEMAS = SchemaDirectory(files("tap_lms_unified") / "schemas" / "bindbee")


class BindbeeStream(LmsStream):
    """A Bindbee LMS list endpoint: `{"cursor","page_size","items"}`, full table."""

    schema = StreamSchema(SCHEMAS)
    primary_keys = ("id",)
    tenant_field = "connector_name"
    replication_key = None
    datetime_fields: t.ClassVar[tuple[str, ...]] = ("modified_at",)
    #: Relations sent as ids, or as objects when expanded: always emitted as ids.
    relations: t.ClassVar[tuple[str, ...]] = ()

    @property
    def path(self) -> str:  # type: ignore[override]
        return f"/api/lms/v1/{self.name}"

    @property
    def activate_versions(self) -> bool:
        """On by default: the only way a target learns that a Bindbee record was deleted."""
        return bool(self.config.get("emit_activate_version_messages", True))

    @property
    def emit_activate_version_messages(self) -> bool:
        # Off for the SDK, which would send ACTIVATE_VERSION *before* the records: a tenant
        # failing later in the run would then lose all its rows. We send it after the last
        # tenant, and only when every tenant was read in full (see get_records).
        return False

    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        version = self._initialized_at // 1000  # the SDK's own version number
        if self.activate_versions:
            self._stream_version = version  # stamped on every RECORD
        yield from super().get_records(context)
        if self.activate_versions and context == self.partitions[-1]:
            failed = [t.key for t in self._tap.tenants.values() if t.failure]
            if failed:
                self.log(
                    "Not activating the new version of %s: tenants %s were not read in "
                    "full, and their rows must not be marked deleted.",
                    self.name,
                    ", ".join(failed),
                    level=logging.WARNING,
                )
            else:
                self._write_activate_version_message(version)

    def get_url_params(self, context: Context | None, next_page_token: str | None) -> dict:
        params: dict[str, t.Any] = {
            "page_size": self._tap.page_size,
            "include_raw_data": "true" if self.config.get("include_raw_data") else "false",
            "include_custom_fields": (
                "true" if self.config.get("include_custom_fields", True) else "false"
            ),
        }
        if next_page_token:
            params["cursor"] = next_page_token
        return params

    def results(self, body: t.Any) -> list[dict]:
        items = body["items"]
        if not isinstance(items, list):
            raise TypeError("items is not a list")
        return items

    def next_cursor(self, body: t.Any) -> str | None:
        cursor = body["cursor"]
        return str(cursor) if cursor else None

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

    def error_text(self, response: requests.Response, code: str | None, message: str) -> str:
        text = super().error_text(response, code, message)
        if response.status_code == HTTPStatus.FORBIDDEN:
            text += (
                " — the connector token was refused for the LMS API: it may belong to a "
                "connector of another category (HRIS, ATS, ...) or be revoked"
            )
        return self._tap.redact(text)

    def normalise(self, record: dict) -> dict:
        record = super().normalise(record)
        for name in self.relations:
            value = record.get(name)
            if isinstance(value, dict):
                record[name] = value.get("id")
            elif isinstance(value, list):
                record[name] = [v.get("id") if isinstance(v, dict) else v for v in value]
        return record


class UsersStream(BindbeeStream):
    name = "users"


class EnrollmentsStream(BindbeeStream):
    name = "enrollments"
    datetime_fields = ("modified_at", "start_date")
    relations = ("user", "course", "completion")


class CompletionsStream(BindbeeStream):
    name = "completions"
    datetime_fields = ("modified_at", "started_at", "completed_at")
    relations = ("user", "course", "content")


class CoursesStream(BindbeeStream):
    name = "courses"
    relations = ("contents", "skills", "categories", "instructors")


class ContentsStream(BindbeeStream):
    name = "contents"
    relations = ("courses", "skills", "categories")


class SkillsStream(BindbeeStream):
    name = "skills"


class CategoriesStream(BindbeeStream):
    name = "categories"


STREAMS: tuple[type[BindbeeStream], ...] = (
    UsersStream,
    EnrollmentsStream,
    CompletionsStream,
    CoursesStream,
    ContentsStream,
    SkillsStream,
    CategoriesStream,
)

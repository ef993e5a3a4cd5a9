"""What the tap needs to know of a unified API: the `Provider` each provider module describes.

A provider module (`providers/<name>.py`) holds everything about one API: base URLs, page
sizes, tenant identity and headers, rate-limit headers, the page envelope, error bodies,
its own settings and their checks, and its streams. Shared modules only talk to this
interface; `providers/__init__.py` is the registry.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field
from http import HTTPStatus

import msgspec

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from singer_sdk import typing as th

    from tap_lms_unified.streams import LmsStream


_DECODE = msgspec.json.Decoder()


def envelope_cursor(decoder: msgspec.json.Decoder[t.Any], content: bytes) -> t.Any:
    """Decode a page with a typed `decoder` of its envelope (records skipped over): the
    envelope's errors as KeyError/TypeError (not the envelope), DecodeError when msgspec
    cannot read it (no JSON, or valid JSON msgspec refuses; the stream decides)."""
    try:
        return decoder.decode(content)
    except msgspec.ValidationError as exc:
        _DECODE.decode(content)  # not for msgspec at all: DecodeError
        raise TypeError(str(exc)) from exc


@dataclass(frozen=True)
class TenantSpec:
    """One customer connection as configured: a non-secret name and identifying headers."""

    key: str
    headers: dict[str, str] = field(repr=False)


class Provider:
    """One unified API. Subclassed once per provider module, instantiated once."""

    #: Value of the `provider` setting, and the schema folder's name.
    name: t.ClassVar[str]
    #: Human name, in messages.
    label: t.ClassVar[str]
    #: Default and maximum `page_size`, from the provider's docs.
    page_size_default: t.ClassVar[int]
    page_size_max: t.ClassVar[int]
    #: The size to step down to, once per run, when the API refuses a page size with a 422
    #: that names `page_size` (docs that disagree on the maximum); None: no step-down.
    page_size_fallback: t.ClassVar[int | None] = None
    #: The record field (and state partition key) naming the tenant a record came from.
    tenant_field: t.ClassVar[str]
    #: The setting that identifies a tenant, named in authentication errors.
    tenant_setting: t.ClassVar[str]
    #: The `*ratelimit-reset` header is a Unix time (True) or seconds from now (False).
    reset_is_epoch: t.ClassVar[bool] = False
    #: Full-table syncs send ACTIVATE_VERSION unless `emit_activate_version_messages` is off.
    activate_versions_by_default: t.ClassVar[bool] = False
    #: Fields of one item of the `integrations` setting (a tenant) for this provider.
    tenant_properties: t.ClassVar[tuple[th.Property[t.Any], ...]] = ()
    #: Settings only this provider reads (declared in the tap's config schema).
    settings: t.ClassVar[tuple[th.Property[t.Any], ...]] = ()
    #: The stream classes, in the order `--discover` lists them.
    streams: t.ClassVar[tuple[type[LmsStream], ...]] = ()

    # -- settings -----------------------------------------------------------------------

    def base_url(self, config: Mapping[str, t.Any]) -> str:
        """The API's base URL when `api_url` does not override it."""
        raise NotImplementedError

    def tenants(self, config: Mapping[str, t.Any]) -> list[TenantSpec]:
        """Each configured tenant, from the single-tenant shorthand and `integrations`."""
        raise NotImplementedError

    def secrets(self, config: Mapping[str, t.Any]) -> list[str]:
        """Secret setting values of this provider, redacted from every output."""
        return []

    def check(self, config: Mapping[str, t.Any]) -> list[str]:
        """Errors in this provider's settings, each naming the setting."""
        return []

    def warnings(self, config: Mapping[str, t.Any]) -> list[str]:
        """Settings that are valid but will not do what the user may expect."""
        return []

    def requests_per_minute(self, config: Mapping[str, t.Any]) -> int | None:
        """A proactive per-tenant request budget, if the provider publishes one."""
        return None

    # -- wire format --------------------------------------------------------------------

    def page(self, body: t.Any) -> tuple[list[t.Any], str | None]:
        """(records, next cursor) of one decoded page; KeyError/TypeError if not the envelope."""
        raise NotImplementedError

    def cursor(self, content: bytes) -> str | None:
        """The next cursor of a raw page, after checking it is the envelope.

        DecodeError if msgspec cannot read it (no JSON, or JSON msgspec refuses: the
        stream then reads it with `decode_json` and `page`), KeyError/TypeError if not the
        envelope. Providers
        override this with a typed decoder that skips over the records instead of
        building them (the main thread decodes them, once).
        """
        return self.page(_DECODE.decode(content))[1]

    def error_details(self, body: t.Any) -> tuple[str | None, str]:
        """(error code, human message) from the provider's error body."""
        return None, ""

    def error_hint(self, status: int) -> str:
        """Advice appended to the error text of a status."""
        if status == HTTPStatus.UNAUTHORIZED:
            return f" — check the api_key and {self.tenant_setting}"
        return ""

    def not_ready(self, status: int, code: str | None) -> bool:
        """Whether an error means the tenant's integration is not ready yet (not retried)."""
        return False

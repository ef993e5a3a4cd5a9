"""What the tap needs to know of a unified API: the `Provider` each provider module declares.

A provider module (`providers/<name>.py`) holds everything about one API, as parameters of
the shared layer: how it authenticates, who a tenant is and where it goes in a request,
how it pages (`paging.py`), its incremental filter, its rate-limit headers, how it refuses a
page size, which status means "not supported for this connection", its error bodies, its
own settings and its streams. Shared modules only talk to this interface;
`providers/__init__.py` is the registry.
"""

from __future__ import annotations

import hashlib
import typing as t
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus

from singer_sdk import typing as th
from singer_sdk.authenticators import BasicAuthenticator, BearerTokenAuthenticator

if t.TYPE_CHECKING:
    from singer_sdk import Stream
    from singer_sdk.authenticators import APIAuthenticatorBase

    from tap_lms_unified.paging import CursorPaging, OffsetPaging


# -- authentication ---------------------------------------------------------------------


@dataclass(frozen=True)
class BearerAuth:
    """`Authorization: Bearer <api_key>`."""

    description: str = "sent as `Authorization: Bearer`"

    def authenticator(self, api_key: str) -> APIAuthenticatorBase:
        return BearerTokenAuthenticator(token=api_key)


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic with the API key as the user name and an empty password."""

    description: str = "sent as HTTP Basic auth, the key as user name and no password"

    def authenticator(self, api_key: str) -> APIAuthenticatorBase:
        return BasicAuthenticator(username=api_key, password="")


Auth = BearerAuth | BasicAuth


# -- tenants -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantSpec:
    """One customer connection as configured: a non-secret name and identifying headers."""

    key: str
    headers: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class Tenancy:
    """Who a tenant is, and where it goes in each request.

    A tenant is one value of `setting` (the single-tenant shorthand) or of that field in an
    `integrations` item. It travels in `header`, or, without one, as the path segment
    `{field}` of every stream's path. A secret value (a token) is never shown: the tenant
    is then known by a name (`name_setting`, or `name` in `integrations`).
    """

    #: The record column and state partition key naming the tenant.
    field: str
    #: The setting (and `integrations` item field) holding the tenant's id or credential.
    setting: str
    #: Its description in the settings (after "<Provider> only: ").
    description: str
    #: The request header carrying the value; None: the path segment `{field}`.
    header: str | None = None
    #: The value is a credential: redacted everywhere, the tenant known by its name.
    secret: bool = False
    #: The single-tenant setting naming a secret tenant (`integrations` items use `name`).
    name_setting: str | None = None
    name_description: str = ""
    #: A secret tenant without a name is called `<prefix>-<a short hash of the value>`.
    anonymous_prefix: str = "tenant"

    @property
    def where(self) -> str:
        """Where the value goes, in messages."""
        return f"sent as {self.header}" if self.header else "a path segment of every request"

    def key_of(self, value: str, name: str | None) -> str:
        if not self.secret:
            return value
        return name or f"{self.anonymous_prefix}-" + hashlib.sha256(value.encode()).hexdigest()[:10]


# -- what the API does besides paging (see paging.py for that) --------------------------


@dataclass(frozen=True)
class IncrementalFilter:
    """The query parameter that asks for records changed since a moment."""

    #: Its query name: `updated_after`, `filter[updated_after]`, `updated_gte`.
    param: str
    #: Its format: "ms" for `2024-01-01T00:00:00.000Z`, "s" for `2024-01-01T00:00:00Z`.
    precision: t.Literal["ms", "s"] = "ms"
    #: Whether a record changed at exactly that moment is included. An exclusive filter is
    #: sent one unit of its precision earlier, so that the moment itself is read again.
    inclusive: bool = False
    #: An integration may refuse the filter, with a 4xx naming it or one of `refused_by`:
    #: that stream is then walked in full for that tenant, with one warning. False: such
    #: an answer is an error like any other.
    may_refuse: bool = False
    refused_by: frozenset[int] = frozenset()

    def value(self, moment: datetime) -> str:
        """The filter's value for records changed at `moment` or later (rounded down)."""
        moment = moment.astimezone(UTC)
        if self.precision == "s":
            moment = moment.replace(microsecond=0)
            if not self.inclusive:
                moment -= timedelta(seconds=1)
            return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        if not self.inclusive:
            moment -= timedelta(milliseconds=1)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class RateLimitHeaders:
    """The headers in which the API says how many requests remain, and until when."""

    remaining: str
    reset: str
    #: The reset is a Unix time (True) or seconds from now (False).
    reset_is_epoch: bool = False


@dataclass(frozen=True)
class PageSizeRefusal:
    """How the API refuses a page size it does not accept: a status naming the size's
    query parameter. The tap then steps down to `fallback`, once per run."""

    statuses: frozenset[int]
    fallback: int


# -- where a stream's schema comes from (read by scripts/generate_schemas.py) ----------


@dataclass(frozen=True)
class SpecSource:
    """Where a stream's record model is in a spec file of `specs/`: below the 200 response
    of the list endpoint `path` (OpenAPI), following `steps`; or at `pointer`."""

    spec: str
    path: str = ""
    steps: tuple[str, ...] = ()
    pointer: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchemaSource:
    """What a stream's JSON schema is generated from: its models (several are united),
    the fields the tap adds, and the deliberate deviations from the spec, each of which
    must still match a spec field (the generator fails when one no longer does)."""

    models: tuple[SpecSource, ...]
    #: Fields the tap adds, with their schema.
    extras: Mapping[str, Mapping[str, t.Any]] = field(default_factory=dict)
    #: Plain strings in the spec that are timestamps (normalised to UTC ISO-8601).
    date_times: frozenset[str] = frozenset()
    #: Integers in the spec that real systems send with a fraction.
    numbers: frozenset[str] = frozenset()
    #: Values the spec types as null or leaves untyped that are really any JSON value.
    any_json: frozenset[str] = frozenset()


DATE_TIME: Mapping[str, t.Any] = {"type": ["string", "null"], "format": "date-time"}


# -- the provider ----------------------------------------------------------------------


class Provider:
    """One unified API. Subclassed once per provider module, instantiated once."""

    #: Value of the `provider` setting, and the schema folder's name.
    name: t.ClassVar[str]
    #: Human name, in messages.
    label: t.ClassVar[str]
    auth: t.ClassVar[Auth] = BearerAuth()
    tenancy: t.ClassVar[Tenancy]
    paging: t.ClassVar[CursorPaging | OffsetPaging]
    #: Default and maximum `page_size`, from the provider's docs.
    page_size_default: t.ClassVar[int]
    page_size_max: t.ClassVar[int]
    page_size_refusal: t.ClassVar[PageSizeRefusal | None] = None
    #: Read by every stream with a replication key; None: every stream is full table.
    incremental: t.ClassVar[IncrementalFilter | None] = None
    rate_limit: t.ClassVar[RateLimitHeaders | None] = None
    #: Statuses meaning "this connection's integration does not support this model": that
    #: stream is skipped for that tenant with a warning, and the run goes on.
    unsupported_statuses: t.ClassVar[frozenset[int]] = frozenset()
    #: Base URLs by `region` (the first is the default).
    regions: t.ClassVar[dict[str, str]]
    #: Full-table syncs send ACTIVATE_VERSION unless `emit_activate_version_messages` is off.
    activate_versions_by_default: t.ClassVar[bool] = False
    #: Settings only this provider reads (declared in the tap's config schema).
    settings: t.ClassVar[tuple[th.Property[t.Any], ...]] = ()
    #: The stream classes, in the order `--discover` lists them.
    streams: t.ClassVar[tuple[type[Stream], ...]] = ()

    # -- settings -----------------------------------------------------------------------

    @property
    def default_region(self) -> str:
        return next(iter(self.regions))

    def base_url(self, config: Mapping[str, t.Any]) -> str:
        """The API's base URL when `api_url` does not override it."""
        return self.regions[str(config.get("region") or self.default_region)]

    def tenant_settings(self) -> tuple[th.Property[t.Any], ...]:
        """The settings naming one tenant: its id or credential, and a secret one's name."""
        tenancy = self.tenancy
        props: list[th.Property[t.Any]] = [
            th.Property(
                tenancy.setting,
                th.StringType,
                secret=tenancy.secret,
                title=f"{tenancy.setting.replace('_', ' ').capitalize()} ({self.label})",
                description=f"{self.label} only, required (or `integrations`): "
                f"{tenancy.description}",
            )
        ]
        if tenancy.name_setting:
            props.append(
                th.Property(
                    tenancy.name_setting,
                    th.StringType,
                    title=f"{tenancy.name_setting.replace('_', ' ').capitalize()} ({self.label})",
                    description=f"{self.label} only: {tenancy.name_description}",
                )
            )
        return tuple(props)

    def tenant_properties(self) -> tuple[th.Property[t.Any], ...]:
        """The fields of one `integrations` item for this provider."""
        tenancy = self.tenancy
        props: list[th.Property[t.Any]] = [
            th.Property(tenancy.setting, th.StringType, secret=tenancy.secret)
        ]
        if tenancy.secret:
            props.append(th.Property("name", th.StringType))
        return tuple(props)

    def tenants(self, config: Mapping[str, t.Any]) -> list[TenantSpec]:
        """Each configured tenant, from the single-tenant shorthand and `integrations`."""
        tenancy = self.tenancy
        single = config.get(tenancy.name_setting) if tenancy.name_setting else None
        pairs = [(config.get(tenancy.setting), single)]
        pairs += [(i.get(tenancy.setting), i.get("name")) for i in config.get("integrations") or ()]
        specs = []
        for value, name in pairs:
            if value:
                headers = {tenancy.header: str(value)} if tenancy.header else {}
                specs.append(TenantSpec(tenancy.key_of(str(value), name), headers))
        return specs

    def secrets(self, config: Mapping[str, t.Any]) -> list[str]:
        """Secret setting values of this provider, redacted from every output."""
        tenancy = self.tenancy
        if not tenancy.secret:
            return []
        values = [config.get(tenancy.setting)]
        values += [i.get(tenancy.setting) for i in config.get("integrations") or ()]
        return [str(value) for value in values if value]

    def check(self, config: Mapping[str, t.Any]) -> list[str]:
        """Errors in this provider's settings, each naming the setting."""
        tenancy, errors = self.tenancy, []
        integrations = config.get("integrations") or []
        for position, item in enumerate(integrations):
            if not str(item.get(tenancy.setting) or "").strip():
                errors.append(
                    f"'integrations[{position}]' needs '{tenancy.setting}' (provider {self.name})"
                )
            if tenancy.secret and len(integrations) > 1 and not item.get("name"):
                errors.append(
                    f"'integrations[{position}]' needs a 'name': with several tenants, each "
                    "needs a stable non-secret name for records, state and logs"
                )
        if not str(config.get(tenancy.setting) or "").strip() and not integrations:
            errors.append(
                f"'{tenancy.setting}' is required when provider is '{self.name}' "
                f"({tenancy.where}), or list tenants in 'integrations'"
            )
        return errors + self.check_own(config)

    def check_own(self, config: Mapping[str, t.Any]) -> list[str]:
        """Errors in the settings only this provider reads."""
        return []

    def warnings(self, config: Mapping[str, t.Any]) -> list[str]:
        """Settings that are valid but will not do what the user may expect."""
        return []

    def requests_per_minute(self, config: Mapping[str, t.Any]) -> int | None:
        """A proactive per-tenant request budget, if the provider publishes one."""
        return None

    def params(self, config: Mapping[str, t.Any]) -> dict[str, str]:
        """Query parameters every request of this provider sends (besides paging/filter)."""
        return {}

    # -- errors ------------------------------------------------------------------------

    def error_details(self, body: t.Any) -> tuple[str | None, str]:
        """(error code, human message) from the provider's error body."""
        return None, ""

    def error_hint(self, status: int) -> str:
        """Advice appended to the error text of a status."""
        if status == HTTPStatus.UNAUTHORIZED:
            return f" — check the api_key and {self.tenancy.setting}"
        return ""

    def not_ready(self, status: int, code: str | None) -> bool:
        """Whether an error means the tenant's integration is not ready yet (not retried)."""
        return False

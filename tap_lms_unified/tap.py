"""tap-lms-unified: settings and the stream list of each provider."""

from __future__ import annotations

import hashlib
import typing as t
from datetime import datetime
from functools import cached_property
from ipaddress import ip_address
from urllib.parse import urlparse

import requests
import urllib3
from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError

from tap_lms_unified import bindbee, kombo
from tap_lms_unified.client import (
    BudgetedSession,
    LmsAPIError,
    RateBudget,
    Redactor,
    SingerWriter,
    Spool,
    Tenant,
)
from tap_lms_unified.prefetch import Prefetcher

if t.TYPE_CHECKING:
    from singer_sdk import Stream

PROVIDERS = ("kombo", "bindbee")
KOMBO_ONLY = ("integration_id", "region", "include_deleted", "lookback_window_minutes")
BINDBEE_ONLY = (
    "connector_token",
    "connector_name",
    "include_raw_data",
    "include_custom_fields",
    "max_requests_per_minute",
)
#: page_size: (default, maximum) per provider, from the providers' docs.
PAGE_SIZES = {"kombo": (250, 250), "bindbee": (100, 200)}


class TenantsFailedError(LmsAPIError):
    """At least one tenant failed; the others finished and their state was kept."""


class TapLmsUnified(Tap):
    """Singer tap for the unified LMS APIs of Kombo and Bindbee."""

    name = "tap-lms-unified"
    message_writer_class = SingerWriter

    config_jsonschema = th.PropertiesList(
        th.Property(
            "provider",
            th.StringType(allowed_values=list(PROVIDERS)),
            required=True,
            title="Provider",
            description="Which unified API to read: `kombo` or `bindbee`.",
        ),
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            title="API key",
            description="Your Kombo or Bindbee API key, sent as `Authorization: Bearer`.",
        ),
        th.Property(
            "integration_id",
            th.StringType,
            title="Integration ID (Kombo)",
            description="Kombo only, required: the customer's integration, sent as "
            "`X-Integration-Id` (e.g. `docebo:8Xi6iZrwusZqJmDGXs49GBmJ`).",
        ),
        th.Property(
            "connector_token",
            th.StringType,
            secret=True,
            title="Connector token (Bindbee)",
            description="Bindbee only, required: the customer's connector token, sent as "
            "`x-connector-token`. A secret.",
        ),
        th.Property(
            "connector_name",
            th.StringType,
            title="Connector name (Bindbee)",
            description="Bindbee only: a stable, non-secret name for `connector_token`, "
            "written to every record as `connector_name` and used in state and logs. "
            "Default: `connector-` + a short hash of the token.",
        ),
        th.Property(
            "integrations",
            th.ArrayType(
                th.ObjectType(
                    th.Property("integration_id", th.StringType),
                    th.Property("connector_token", th.StringType, secret=True),
                    th.Property("name", th.StringType),
                )
            ),
            title="Integrations (many customers)",
            description='Several tenants in one run: Kombo `[{"integration_id": ...}]`, '
            'Bindbee `[{"connector_token": ..., "name": ...}]`. Each keeps its own '
            "bookmarks; records carry `integration_id` / `connector_name`.",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType,
            default=8,
            title="Maximum concurrent walks",
            description="How many endpoint walks (tenants) are fetched at once while records "
            "are written. Each tenant stays under its own rate budget.",
        ),
        th.Property(
            "fail_fast",
            th.BooleanType,
            default=False,
            title="Fail fast",
            description="Stop the whole run at the first failing tenant. Default: the other "
            "tenants finish, and the run exits non-zero with a summary of the failures.",
        ),
        th.Property(
            "region",
            th.StringType(allowed_values=["eu", "us"]),
            default="eu",
            title="Region (Kombo)",
            description="Kombo only: `eu` (api.kombo.dev) or `us` (api.us.kombo.dev).",
        ),
        th.Property(
            "api_url",
            th.URIType,
            title="API base URL",
            description="Overrides the provider's base URL, e.g. the local sandbox. Kombo "
            "default `https://api.kombo.dev/v1` (by region); Bindbee default "
            "`https://api.bindbee.dev`. Must be HTTPS unless the host is loopback.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="Kombo: the earliest `changed_at` to fetch on a first run (no "
            "bookmark yet). Bindbee has no such filter: ignored with a warning.",
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            title="Page size",
            description="Records per request. Kombo: default 250, 1..250. Bindbee: default "
            "100, 1..200.",
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
        th.Property(
            "request_timeout",
            th.NumberType,
            default=60,
            title="Request timeout (s)",
            description="Seconds to wait for a response before retrying.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=5,
            title="Maximum retries",
            description="Retries of one request after 429, 5xx, timeouts and broken "
            "connections, before the run fails.",
        ),
        th.Property(
            "max_retry_wait_seconds",
            th.NumberType,
            default=300,
            title="Maximum wait per retry (s)",
            description="Cap on the wait before a retry, whatever `Retry-After` or the "
            "rate-limit reset header asks.",
        ),
        th.Property(
            "tls_verify",
            th.BooleanType,
            default=True,
            title="Verify TLS certificates",
            description="Verify the API's TLS certificate. Turning it off (a debugging proxy, "
            "say) logs a warning on every run.",
        ),
        th.Property(
            "allow_insecure_http",
            th.BooleanType,
            default=False,
            title="Allow plain HTTP",
            description="Allow an `http://` api_url for a host that is not loopback. Off: "
            "the API key and tokens must not travel in clear text.",
        ),
        th.Property(
            "user_agent",
            th.StringType,
            title="User agent",
            description="User-Agent header; default `tap-lms-unified/<version>`.",
        ),
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
        th.Property(
            "emit_activate_version_messages",
            th.BooleanType,
            title="Emit ACTIVATE_VERSION",
            description="Full-table streams (all of Bindbee's) send ACTIVATE_VERSION so "
            "targets soft-delete rows that vanished from the API. Default: on for Bindbee.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, validate_config: bool = True, **kwargs: t.Any) -> None:
        super().__init__(*args, validate_config=validate_config, **kwargs)
        self.spools: dict[tuple[str, str], Spool] = {}
        self.synced_walks: set[str] = set()
        if validate_config:
            self._check_settings()
        self.redact = Redactor(
            [
                self.config.get("api_key"),
                self.config.get("connector_token"),
                *(i.get("connector_token") for i in self.config.get("integrations") or ()),
            ]
        )
        self.prefetcher = Prefetcher(int(self.config.get("max_concurrency") or 8))

    # -- settings ------------------------------------------------------------------------

    def _check_settings(self) -> None:
        """Cross-field checks the JSON schema cannot express; all errors name the setting."""
        config = self.config
        provider = config.get("provider")
        errors: list[str] = []

        def require(name: str, why: str) -> None:
            if not str(config.get(name) or "").strip():
                errors.append(f"'{name}' is required {why}")

        require("api_key", "(your provider API key)")
        if provider in PROVIDERS:
            errors.extend(_tenant_errors(provider, config))
        if provider in PAGE_SIZES and config.get("page_size") is not None:
            maximum = PAGE_SIZES[provider][1]
            size = config["page_size"]
            if not 1 <= size <= maximum:
                errors.append(f"'page_size' must be between 1 and {maximum} for {provider}")
        for name in ("lookback_window_minutes", "max_retries"):
            if config.get(name) is not None and config[name] < 0:
                errors.append(f"'{name}' must not be negative")
        for name in ("request_timeout", "max_requests_per_minute", "max_concurrency"):
            if config.get(name) is not None and config[name] <= 0:
                errors.append(f"'{name}' must be greater than 0")
        if config.get("start_date"):
            try:
                datetime.fromisoformat(str(config["start_date"]).replace("Z", "+00:00"))
            except ValueError:
                errors.append(f"'start_date' is not an ISO-8601 date-time: {config['start_date']}")
        if config.get("api_url"):
            url = urlparse(str(config["api_url"]))
            if url.scheme not in ("http", "https") or not url.hostname:
                errors.append("'api_url' must be an http(s) URL")
            elif (
                url.scheme == "http"
                and not _is_loopback(url.hostname)
                and not config.get("allow_insecure_http")
            ):
                errors.append(
                    "'api_url' must use https for a non-loopback host: the API key would "
                    "travel in clear text (set 'allow_insecure_http' to override)"
                )
        if errors:
            raise ConfigValidationError("Config validation failed", errors=errors)
        other = BINDBEE_ONLY if provider == "kombo" else KOMBO_ONLY
        defaults = {k: v.get("default") for k, v in self.config_jsonschema["properties"].items()}
        for name in other:
            if config.get(name) not in (None, "", defaults.get(name)):
                self.logger.warning(
                    "Setting '%s' applies to the other provider and is ignored with provider '%s'.",
                    name,
                    provider,
                )
        if config.get("tls_verify") is False:
            self.logger.warning(
                "Setting 'tls_verify' is false: TLS certificates are NOT verified; the API "
                "key and tokens could be read by anyone who can intercept the connection."
            )
        if provider == "bindbee" and config.get("start_date"):
            self.logger.warning(
                "Setting 'start_date' is ignored with provider 'bindbee': its LMS endpoints "
                "have no date filter, every stream is read in full."
            )

    @property
    def provider(self) -> str:
        return str(self.config["provider"])

    @property
    def provider_label(self) -> str:
        return "Kombo" if self.provider == "kombo" else "Bindbee"

    @property
    def base_url(self) -> str:
        if self.config.get("api_url"):
            return str(self.config["api_url"]).rstrip("/")
        if self.provider == "kombo":
            return kombo.BASE_URLS[self.config.get("region") or "eu"]
        return bindbee.BASE_URL

    @property
    def page_size(self) -> int:
        return int(self.config.get("page_size") or PAGE_SIZES[self.provider][0])

    @property
    def reset_is_epoch(self) -> bool:
        """Bindbee's `X-RateLimit-Reset` is a Unix time; Kombo's `ratelimit-reset` seconds."""
        return self.provider == "bindbee"

    @property
    def tenant_setting_hint(self) -> str:
        return " and integration_id" if self.provider == "kombo" else " and connector_token"

    @cached_property
    def tenants(self) -> dict[str, Tenant]:
        """The run's tenants by non-secret name, each with its own session and budget."""
        per_minute = (
            int(self.config.get("max_requests_per_minute") or 200)
            if self.provider == "bindbee"
            else None
        )
        tenants = {}
        for key, headers in _tenant_specs(self.provider, self.config):
            budget = RateBudget(
                per_minute,
                reset_is_epoch=self.reset_is_epoch,
                max_wait=float(self.config.get("max_retry_wait_seconds", 300)),
            )
            session = BudgetedSession(budget)
            session.verify = self.config.get("tls_verify", True) is not False
            if not session.verify:  # warned once in the log above, not on every request
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            tenants[key] = Tenant(key=key, headers=headers, session=session)
        return tenants

    @cached_property
    def prepare_session(self) -> requests.Session:
        """Builds requests (auth, params); they are sent through a tenant's session."""
        return requests.Session()

    def fail_tenant(self, tenant: Tenant, stream: str, error: BaseException) -> None:
        """Record a tenant's failure; the run goes on without it unless fail_fast is set."""
        message = self.redact(str(error))
        tenant.failure, tenant.error = f"{stream}: {message}", error
        if self.config.get("fail_fast"):
            self.prefetcher.close()
            raise error
        self.logger.error(
            "Tenant %s failed on stream %s: %s. The other tenants go on; this tenant's "
            "bookmarks stay where they were.",
            tenant.key,
            stream,
            message,
        )

    def finish(self) -> None:
        """Flush the output, log one line per tenant, and fail the run if a tenant failed."""
        self.flush_output()
        self.prefetcher.close()
        for tenant in self.tenants.values():
            self.logger.info(tenant.summary())
        failed = [t for t in self.tenants.values() if t.failure]
        if len(self.tenants) == 1 and failed and failed[0].error is not None:
            raise failed[0].error  # one tenant: its own error says it best
        if failed:
            details = "; ".join(f"{t.key} ({t.failure})" for t in failed)
            msg = f"{len(failed)} of {len(self.tenants)} tenants failed: {details}"
            raise TenantsFailedError(msg)

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        state: t.IO[str] | None = None,
        catalog: t.IO[str] | None = None,
    ) -> None:
        # Overridden (the SDK's steps, then `finish`): a failed tenant must make the exit
        # code non-zero after the other tenants have finished and their state was written.
        from singer_sdk.helpers._util import load_json
        from singer_sdk.plugin_base import _ConfigInput

        super(Tap, cls).invoke(about=about, about_format=about_format)
        cls.print_version(print_fn=cls.logger.info)
        config = config or _ConfigInput()
        tap = cls(
            config=config.config,
            state=None if state is None else load_json(state.read()),
            catalog=None if catalog is None else load_json(catalog.read()),
            parse_env_config=config.parse_env,
            validate_config=True,
        )
        try:
            tap.sync_all()
        finally:
            tap.flush_output()  # also when interrupted: the records before it were read
        tap.finish()

    def flush_output(self) -> None:
        """Write out records still buffered by the writer (no STATE may follow them)."""
        if isinstance(self.message_writer, SingerWriter):
            self.message_writer.flush()

    # -- streams -------------------------------------------------------------------------

    def discover_streams(self) -> list[Stream]:
        module = kombo if self.provider == "kombo" else bindbee
        return [stream_class(tap=self) for stream_class in module.STREAMS]


def _tenant_specs(provider: str, config: t.Mapping) -> list[tuple[str, dict[str, str]]]:
    """(name, identifying headers) of each tenant, from the shorthand and `integrations`."""
    specs = []
    if provider == "kombo":
        ids = [config.get("integration_id")]
        ids += [i.get("integration_id") for i in config.get("integrations") or ()]
        specs = [(str(i), {"X-Integration-Id": str(i)}) for i in ids if i]
    else:
        pairs = [(config.get("connector_token"), config.get("connector_name"))]
        pairs += [
            (i.get("connector_token"), i.get("name")) for i in config.get("integrations") or ()
        ]
        for token, name in pairs:
            if token:
                key = name or "connector-" + hashlib.sha256(str(token).encode()).hexdigest()[:10]
                specs.append((str(key), {"x-connector-token": str(token)}))
    return specs


def _tenant_errors(provider: str, config: t.Mapping) -> list[str]:
    """Each tenant complete and named once; at least one tenant."""
    errors = []
    integrations = config.get("integrations") or []
    field, label = (
        ("integration_id", "X-Integration-Id")
        if provider == "kombo"
        else ("connector_token", "x-connector-token")
    )
    for position, item in enumerate(integrations):
        if not str(item.get(field) or "").strip():
            errors.append(f"'integrations[{position}]' needs '{field}' (provider {provider})")
        if provider == "bindbee" and len(integrations) > 1 and not item.get("name"):
            errors.append(
                f"'integrations[{position}]' needs a 'name': with several connectors, each "
                "needs a stable non-secret name for records, state and logs"
            )
    if not str(config.get(field) or "").strip() and not integrations:
        errors.append(
            f"'{field}' is required when provider is '{provider}' (sent as {label}), "
            "or list tenants in 'integrations'"
        )
    names = [key for key, _ in _tenant_specs(provider, config)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        errors.append(f"'integrations' names a tenant more than once: {', '.join(duplicates)}")
    return errors


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    TapLmsUnified.cli()

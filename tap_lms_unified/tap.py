"""tap-lms-unified: settings and the stream list of each provider."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from ipaddress import ip_address
from urllib.parse import urlparse

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError

from tap_lms_unified import bindbee, kombo
from tap_lms_unified.client import BudgetedSession, RateBudget, Redactor, Spool

if t.TYPE_CHECKING:
    from singer_sdk import Stream

PROVIDERS = ("kombo", "bindbee")
KOMBO_ONLY = ("integration_id", "region", "include_deleted", "lookback_window_minutes")
BINDBEE_ONLY = (
    "connector_token",
    "include_raw_data",
    "include_custom_fields",
    "max_requests_per_minute",
)
#: page_size: (default, maximum) per provider, from the providers' docs.
PAGE_SIZES = {"kombo": (250, 250), "bindbee": (100, 200)}


@dataclass
class RunMetrics:
    """Counters of one run, for the closing log line."""

    retries: int = 0
    throttled: int = 0


class TapLmsUnified(Tap):
    """Singer tap for the unified LMS APIs of Kombo and Bindbee."""

    name = "tap-lms-unified"

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
        self.spools: dict[str, Spool] = {}
        self.synced_walks: set[str] = set()
        self.metrics = RunMetrics()
        if validate_config:
            self._check_settings()
        self.redact = Redactor([self.config.get("api_key"), self.config.get("connector_token")])

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
        if provider == "kombo":
            require("integration_id", "when provider is 'kombo' (sent as X-Integration-Id)")
        if provider == "bindbee":
            require("connector_token", "when provider is 'bindbee' (sent as x-connector-token)")
        if provider in PAGE_SIZES and config.get("page_size") is not None:
            maximum = PAGE_SIZES[provider][1]
            size = config["page_size"]
            if not 1 <= size <= maximum:
                errors.append(f"'page_size' must be between 1 and {maximum} for {provider}")
        for name in ("lookback_window_minutes", "max_retries"):
            if config.get(name) is not None and config[name] < 0:
                errors.append(f"'{name}' must not be negative")
        for name in ("request_timeout", "max_requests_per_minute"):
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
    def session(self) -> BudgetedSession:
        per_minute = (
            int(self.config.get("max_requests_per_minute") or 200)
            if self.provider == "bindbee"
            else None
        )
        session = BudgetedSession(RateBudget(per_minute, reset_is_epoch=self.reset_is_epoch))
        session.verify = self.config.get("tls_verify", True) is not False
        return session

    # -- streams -------------------------------------------------------------------------

    def discover_streams(self) -> list[Stream]:
        module = kombo if self.provider == "kombo" else bindbee
        return [stream_class(tap=self) for stream_class in module.STREAMS]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    TapLmsUnified.cli()

"""The tap's settings, each declared once, and the checks the JSON schema cannot express.

Shared settings are declared here with provider-neutral descriptions; where only some
providers read one, the description says which, from the registry (the providers with an
incremental filter read `start_date`, those with regions `region`). Each provider adds
the settings naming its tenants (from its `Tenancy`) and its own settings, which no other
provider may declare too. Every check names the setting.
"""

from __future__ import annotations

import difflib
import typing as t
from collections import Counter
from ipaddress import ip_address
from urllib.parse import urlparse

from singer_sdk import typing as th

from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.shaping import utc_iso

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from tap_lms_unified.provider import Provider


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _readers(which: t.Callable[[Provider], object]) -> str:
    return _names(p.name for p in PROVIDERS.values() if which(p))


def _tenant_properties() -> list[th.Property[t.Any]]:
    """Every provider's fields of an `integrations` item, each declared once."""
    seen: dict[str, th.Property[t.Any]] = {}
    for provider in PROVIDERS.values():
        for prop in provider.tenant_properties():
            other = seen.setdefault(prop.name, prop)
            if other.to_dict() != prop.to_dict():
                msg = f"two providers declare the integrations field {prop.name!r} differently"
                raise TypeError(msg)
    return list(seen.values())


def _tenant_fields() -> str:
    return "; ".join(
        f"{p.name}: {_names(prop.name for prop in p.tenant_properties())}"
        for p in PROVIDERS.values()
    )


def _regions() -> str:
    return "; ".join(
        f"{p.name}: "
        + ", ".join(f"`{r}`" + (" (default)" if r == p.default_region else "") for r in p.regions)
        for p in PROVIDERS.values()
        if len(p.regions) > 1
    )


COMMON_SETTINGS = (
    th.Property(
        "provider",
        th.StringType(allowed_values=list(PROVIDERS)),
        required=True,
        title="Provider",
        description=f"Which unified API to read: {_names(PROVIDERS)}.",
    ),
    th.Property(
        "api_key",
        th.StringType,
        required=True,
        secret=True,
        title="API key",
        description="Your API key of that provider; "
        + "; ".join(f"{p.name}: {p.auth.description}" for p in PROVIDERS.values())
        + ".",
    ),
    th.Property(
        "integrations",
        th.ArrayType(th.ObjectType(*_tenant_properties())),
        title="Integrations (many customers)",
        description="Several tenants in one run, each a list item with the provider's "
        f"tenant fields ({_tenant_fields()}). Each keeps its own bookmarks; records carry "
        "the tenant's non-secret name.",
    ),
    th.Property(
        "region",
        th.StringType(allowed_values=sorted({r for p in PROVIDERS.values() for r in p.regions})),
        title="Region",
        description=f"The provider's region, which sets its base URL ({_regions()}).",
    ),
    th.Property(
        "start_date",
        th.DateTimeType,
        title="Start date",
        description="The earliest change to read on a first run (no bookmark yet), and the "
        "lower bound of a full-table run. Read by the providers with an incremental filter "
        f"({_readers(lambda p: p.incremental)}); ignored with a warning by the others.",
    ),
    th.Property(
        "lookback_window_minutes",
        th.IntegerType,
        default=5,
        title="Lookback window (minutes)",
        description="Overlap subtracted from the bookmark when building the incremental "
        "filter, against clock skew and late writes. Read by "
        f"{_readers(lambda p: p.incremental)}.",
    ),
    th.Property(
        "max_concurrency",
        th.IntegerType,
        default=8,
        title="Maximum concurrent requests",
        description="How many requests (pages of every selected stream for every tenant) "
        "are in flight at once while records are written. Each tenant stays under its own "
        "rate budget.",
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
        "api_url",
        th.URIType,
        title="API base URL",
        description="Overrides the provider's base URL, e.g. the local sandbox. Must be "
        "HTTPS unless the host is loopback.",
    ),
    th.Property(
        "page_size",
        th.IntegerType,
        title="Page size",
        description="Records per request. Default and range by provider: "
        + "; ".join(
            f"{p.name} {p.page_size_default}, 1..{p.page_size_max}" for p in PROVIDERS.values()
        )
        + ".",
    ),
    th.Property(
        "request_timeout",
        th.NumberType,
        default=60,
        title="Request timeout (s)",
        description="Seconds one response may take, from connecting to its last byte, "
        "before it is abandoned and retried (however slowly the server sends).",
    ),
    th.Property(
        "max_response_bytes",
        th.IntegerType,
        default=50_000_000,
        title="Maximum response size (bytes)",
        description="Largest response body, counted decoded (after gzip), that the tap "
        "reads; a larger one fails its tenant with an error naming this setting. The "
        "default (50 MB) is far above any real page; memory stays a small multiple of it.",
    ),
    th.Property(
        "max_retries",
        th.IntegerType,
        default=5,
        title="Maximum retries",
        description="Retries of one request after 408, 429, 5xx, timeouts and broken "
        "connections, before the tenant fails.",
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
        "invalid_records",
        th.StringType(allowed_values=["fail", "warn"]),
        default="fail",
        title="Records without a usable key",
        description="A record whose primary key is missing, null or not a string is never "
        "emitted; it is logged and counted per tenant and stream. `fail` (default): the run "
        "then exits non-zero; `warn`: only a warning.",
    ),
    th.Property(
        "summary_file",
        th.StringType,
        title="Summary file",
        description="Write every tenant's figures (outcome, records per stream, requests, "
        "retries, 429s) as JSON to this file at the end of a run.",
    ),
    th.Property(
        "user_agent",
        th.StringType,
        title="User agent",
        description="User-Agent header; default `tap-lms-unified/<version>`.",
    ),
    th.Property(
        "emit_activate_version_messages",
        th.BooleanType,
        title="Emit ACTIVATE_VERSION",
        description="Full-table streams send ACTIVATE_VERSION so targets soft-delete rows "
        "that vanished from the API. Default: on for "
        f"{_readers(lambda p: p.activate_versions_by_default) or 'no provider'}, off for "
        "the others.",
    ),
)


def _provider_settings() -> list[th.Property[t.Any]]:
    """The settings of each provider (its tenants', its own), no name declared twice."""
    props: dict[str, th.Property[t.Any]] = {p.name: p for p in COMMON_SETTINGS}
    owners: dict[str, str] = {}
    for provider in PROVIDERS.values():
        for prop in (*provider.tenant_settings(), *provider.settings):
            if prop.name in props:
                other = owners.get(prop.name, "the shared settings")
                msg = f"{provider.name} declares setting {prop.name!r}, as {other} does"
                raise TypeError(msg)
            props[prop.name] = prop
            owners[prop.name] = provider.name
    return list(props.values())


SETTINGS = _provider_settings()
CONFIG_SCHEMA = th.PropertiesList(*SETTINGS).to_dict()
#: The provider that reads each provider-specific setting.
OWNERS = {
    prop.name: provider.name
    for provider in PROVIDERS.values()
    for prop in (*provider.tenant_settings(), *provider.settings)
}


def errors(config: Mapping[str, t.Any]) -> list[str]:
    """Cross-field checks the JSON schema cannot express; every error names the setting."""
    found: list[str] = []
    if not str(config.get("api_key") or "").strip():
        found.append("'api_key' is required (your provider API key)")
    provider = PROVIDERS.get(str(config.get("provider")))
    if provider is not None:
        found.extend(provider.check(config))
        found.extend(_duplicate_tenants(provider, config))
        size = config.get("page_size")
        if size is not None and not 1 <= size <= provider.page_size_max:
            found.append(
                f"'page_size' must be between 1 and {provider.page_size_max} for "
                f"{provider.name}, got {size!r}"
            )
        region = config.get("region")
        if region is not None and region not in provider.regions:
            found.append(
                f"'region' must be one of {', '.join(provider.regions)} for {provider.name}, "
                f"got {region!r}"
            )
        if config.get("start_date") and utc_iso(str(config["start_date"])) is None:
            found.append(f"'start_date' is not an ISO-8601 date-time: {config['start_date']}")
        lookback = config.get("lookback_window_minutes")
        if lookback is not None and lookback < 0:
            found.append(f"'lookback_window_minutes' must not be negative, got {lookback!r}")
    # Settings with a default are filled in by the SDK; only an explicit null is None.
    if config["max_retries"] is not None and config["max_retries"] < 0:
        found.append(f"'max_retries' must not be negative, got {config['max_retries']!r}")
    for name in ("request_timeout", "max_concurrency", "max_response_bytes"):
        if config[name] is not None and config[name] <= 0:
            found.append(f"'{name}' must be greater than 0, got {config[name]!r}")
    found.extend(_api_url_errors(config))
    return found


def unknown_value(name: str, value: t.Any, allowed: t.Sequence[str]) -> str:
    """`'region' must be one of eu, us, got 'ue'; did you mean 'eu'?` for an enumeration."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"'{name}' must be one of {', '.join(map(str, allowed))}, got {value!r}{hint}"


def enum_errors(config: Mapping[str, t.Any]) -> list[str]:
    """Values of enumerated settings that are not allowed, with the closest allowed one."""
    found = []
    for name, schema in CONFIG_SCHEMA["properties"].items():
        allowed = schema.get("enum")
        value = config.get(name)
        if allowed and value is not None and value not in allowed:
            found.append(unknown_value(name, value, [a for a in allowed if a is not None]))
    return found


def warnings(config: Mapping[str, t.Any], provider: Provider) -> list[str]:
    """Settings that are valid but will not do what the user may expect."""
    found = []
    known = list(CONFIG_SCHEMA["properties"])
    for name in sorted(set(config) - set(known)):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        found.append(f"Unknown setting '{name}' is ignored{hint}")
    defaults = {k: v.get("default") for k, v in CONFIG_SCHEMA["properties"].items()}
    for name, owner in OWNERS.items():
        if owner != provider.name and config.get(name) not in (None, "", defaults.get(name)):
            found.append(
                f"Setting '{name}' is read by provider '{owner}' only and is ignored with "
                f"provider '{provider.name}'."
            )
    if provider.incremental is None and config.get("start_date"):
        found.append(
            f"Setting 'start_date' is ignored with provider '{provider.name}': its API has "
            "no incremental filter, so every stream is read in full."
        )
    found.extend(provider.warnings(config))
    if config["tls_verify"] is False:
        found.append(
            "Setting 'tls_verify' is false: TLS certificates are NOT verified; the API "
            "key and tokens could be read by anyone who can intercept the connection."
        )
    return found


def _duplicate_tenants(provider: Provider, config: Mapping[str, t.Any]) -> list[str]:
    counts = Counter(spec.key for spec in provider.tenants(config))
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        return [f"'integrations' names a tenant more than once: {', '.join(duplicates)}"]
    return []


def _api_url_errors(config: Mapping[str, t.Any]) -> list[str]:
    if not config.get("api_url"):
        return []
    value = str(config["api_url"])
    url = urlparse(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        hint = (
            " (an environment variable it is built from may be unset)" if value[:1] in "/:" else ""
        )
        return [f"'api_url' must be an http(s) URL, got {value!r}{hint}"]
    if (
        url.scheme == "http"
        and not _is_loopback(url.hostname)
        and not config["allow_insecure_http"]
    ):
        return [
            "'api_url' must use https for a non-loopback host: the API key would travel in "
            "clear text (set 'allow_insecure_http' to override)"
        ]
    return []


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

"""tap-lms-unified: the Singer tap, its shared settings, and one run per invocation.

What is specific to one unified API lives in its module under `providers/`; this module
only talks to the `Provider` interface (provider.py) found in the registry.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import signal
import threading
import typing as t
from functools import cached_property
from ipaddress import ip_address
from urllib.parse import urlparse

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError

from tap_lms_unified.errors import Interrupted
from tap_lms_unified.output import Lines, SingerWriter
from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.run import Run
from tap_lms_unified.state import check_shape, migrate

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import FrameType

    from singer_sdk import Stream

    from tap_lms_unified.provider import Provider


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _tenant_properties() -> list[th.Property[t.Any]]:
    """Every provider's fields of an `integrations` item, each declared once."""
    seen: dict[str, th.Property[t.Any]] = {}
    for provider in PROVIDERS.values():
        for prop in provider.tenant_properties:
            seen.setdefault(prop.name, prop)
    return list(seen.values())


def _tenant_fields() -> str:
    return "; ".join(
        f"{p.name}: {_names(prop.name for prop in p.tenant_properties)}" for p in PROVIDERS.values()
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
        description="Your provider API key, sent as `Authorization: Bearer`.",
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
        "max_concurrency",
        th.IntegerType,
        default=8,
        title="Maximum concurrent walks",
        description="How many endpoint walks (each selected stream for each tenant) are "
        "fetched at once while records are written. Each tenant stays under its own rate "
        "budget.",
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
        "invalid_records",
        th.StringType(allowed_values=["fail", "warn"]),
        default="fail",
        title="Records without a usable key",
        description="A record whose primary key is missing, null or not a string is never "
        "emitted; it is logged and counted per tenant and stream. `fail` (default): the run "
        "then exits non-zero; `warn`: only a warning.",
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
        "that vanished from the API. Default: on.",
    ),
)


class TapLmsUnified(Tap):
    """Singer tap for the unified LMS APIs behind the provider registry."""

    name = "tap-lms-unified"
    message_writer_class = SingerWriter
    #: The termination signal received, if any (the run then stops; see _handle_termination).
    _interrupted: int | None = None
    # Discovery validates the configuration exactly as a sync does.
    dynamic_catalog = True

    config_jsonschema = th.PropertiesList(
        *COMMON_SETTINGS,
        *{
            prop.name: prop for provider in PROVIDERS.values() for prop in provider.settings
        }.values(),
    ).to_dict()

    def __init__(self, *args: t.Any, validate_config: bool = True, **kwargs: t.Any) -> None:
        super().__init__(*args, validate_config=validate_config, **kwargs)
        if validate_config:
            self._check_settings()
            self._check_catalog()

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Check the state's shape, and read stream-level bookmarks as the single tenant's."""
        check_shape(state)
        provider = PROVIDERS.get(str(self.config.get("provider")))
        if provider is not None and state:
            state = migrate(
                state,
                tenant_field=provider.tenant_field,
                tenants=[spec.key for spec in provider.tenants(self.config)],
                logger=self.logger,
            )
        super().load_state(state)

    @property
    def provider(self) -> Provider:
        return PROVIDERS[str(self.config["provider"])]

    @cached_property
    def run(self) -> Run:
        """This invocation's tenants, walks and bookkeeping, shared with every stream."""
        return Run(
            self.provider,
            self.config,
            user_agent=str(self.config.get("user_agent") or f"{self.name}/{self.plugin_version}"),
            version=self.initialized_at // 1000,
            logger=self.logger,
        )

    # -- settings ------------------------------------------------------------------------

    def _check_settings(self) -> None:
        """Cross-field checks the JSON schema cannot express; all errors name the setting."""
        config = self.config
        errors: list[str] = []
        if not str(config.get("api_key") or "").strip():
            errors.append("'api_key' is required (your provider API key)")
        provider = PROVIDERS.get(str(config.get("provider")))
        if provider is not None:
            errors.extend(provider.check(config))
            errors.extend(_duplicate_tenants(provider, config))
            size = config.get("page_size")
            if size is not None and not 1 <= size <= provider.page_size_max:
                errors.append(
                    f"'page_size' must be between 1 and {provider.page_size_max} for "
                    f"{provider.name}, got {size!r}"
                )
        # Settings with a default are filled in by the SDK; only an explicit null is None.
        if config["max_retries"] is not None and config["max_retries"] < 0:
            errors.append(f"'max_retries' must not be negative, got {config['max_retries']!r}")
        for name in ("request_timeout", "max_concurrency", "max_response_bytes"):
            if config[name] is not None and config[name] <= 0:
                errors.append(f"'{name}' must be greater than 0, got {config[name]!r}")
        errors.extend(_api_url_errors(config))
        if errors:
            raise ConfigValidationError("Config validation failed", errors=errors)
        assert provider is not None  # the schema requires one of PROVIDERS
        self._warn_about_settings(provider)

    def _check_catalog(self) -> None:
        """Warn about catalog entries for streams this provider does not have."""
        if self.input_catalog is None:
            return
        unknown = sorted(set(self.input_catalog) - set(self.streams))
        if unknown:
            self.logger.warning(
                "The catalog lists streams that provider '%s' does not have, ignored: %s "
                "(its streams: %s).",
                self.provider.name,
                ", ".join(unknown),
                ", ".join(self.streams),
            )

    def _warn_about_settings(self, provider: Provider) -> None:
        config = self.config
        known = list(self.config_jsonschema["properties"])
        for name in sorted(set(config) - set(known)):
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.logger.warning("Unknown setting '%s' is ignored%s", name, hint)
        own = {prop.name for prop in provider.settings}
        defaults = {k: v.get("default") for k, v in self.config_jsonschema["properties"].items()}
        for other in PROVIDERS.values():
            for prop in other.settings:
                name = prop.name
                if name not in own and config.get(name) not in (None, "", defaults.get(name)):
                    own.add(name)  # warned once
                    self.logger.warning(
                        "Setting '%s' applies to the other provider and is ignored with "
                        "provider '%s'.",
                        name,
                        provider.name,
                    )
        for warning in provider.warnings(config):
            self.logger.warning(warning)
        if config["tls_verify"] is False:
            self.logger.warning(
                "Setting 'tls_verify' is false: TLS certificates are NOT verified; the API "
                "key and tokens could be read by anyone who can intercept the connection."
            )

    # -- a run ---------------------------------------------------------------------------

    # The SDK marks sync_all final yet has no after-sync hook; this only wraps it.
    def sync_all(self) -> None:  # type: ignore[misc]
        """Sync every selected stream, then fail the run if a tenant failed.

        A failed tenant must make the exit code non-zero after the other tenants have
        finished and their state was written.
        """
        try:
            try:
                with few_collections():
                    super().sync_all()
            finally:
                self.flush_output()  # also when interrupted: the records before it were read
            if self._interrupted is not None:  # arrived while the last lines were written
                raise Interrupted(self._interrupted)
        except Interrupted as stop:
            self.stop_interrupted(stop)
            raise
        self.run.finish()

    # -- signals: whole messages, each once, then the final STATE and 128 + signal ------

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        # Replaces the SDK's handler, which wrote a STATE and exited from wherever the
        # main thread was: in the middle of writing a buffer of records, which the final
        # flush then wrote again (a cut line and duplicated records).
        name = signal.Signals(signum).name
        if self._interrupted is not None:
            self.logger.warning("%s again: still finishing the message being written", name)
            return
        self._interrupted = signum
        self.logger.warning(
            "Received %s: stopping after the message being written; the final STATE "
            "follows, then exit %d",
            name,
            128 + signum,
        )
        lines = getattr(self.message_writer, "lines", None)
        if isinstance(lines, Lines) and lines.busy:
            lines.stop_after = Interrupted(signum)  # raised once the message is out
            return
        raise Interrupted(signum)

    def stop_interrupted(self, stop: Interrupted) -> None:
        """Finish an interrupted sync: buffered records, the final STATE, the summary."""
        lines = getattr(self.message_writer, "lines", None)
        if isinstance(lines, Lines):
            lines.stop_after = None  # this is that stop: the final messages must go out
        self.flush_output()
        self._state_writer.write_state(self.state)  # the SDK's final STATE, as it did
        self.flush_output()
        self.run.prefetcher.close()
        for tenant in self.run.tenants.values():
            self.logger.info(tenant.summary())
        self.logger.warning(
            "Interrupted by %s: exit %d after the final STATE",
            signal.Signals(stop.signum).name,
            stop.code,
        )

    def flush_output(self) -> None:
        """Write out records still buffered by the writer (no STATE may follow them)."""
        lines = getattr(self.message_writer, "lines", None)
        if isinstance(lines, Lines):  # the Singer and the Airbyte writer alike
            lines.flush()

    def discover_streams(self) -> list[Stream]:
        streams = [stream_class(tap=self, run=self.run) for stream_class in self.provider.streams]
        self.run.streams.update((stream.name, stream) for stream in streams)
        return list(streams)


#: Allocations between the garbage collector's youngest-generation passes during a sync.
GC_THRESHOLD = 100_000


class _Collector:
    """The collector's settings before the syncs running in this process (threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.syncs = 0
        self.threshold = gc.get_threshold()


_COLLECTOR = _Collector()


@contextlib.contextmanager
def few_collections() -> t.Iterator[None]:
    """Fewer, smaller garbage-collector passes while records stream through.

    Records are acyclic (reference counting frees them), yet every few hundred of the
    dicts a run allocates made the collector walk the tap's long-lived objects (the SDK,
    schemas, catalog): 8-10% of a sync's CPU. What exists at the start is frozen out of
    its passes, and its youngest generation is collected less often; both are undone when
    the last sync of the process ends.
    """
    with _COLLECTOR.lock:
        _COLLECTOR.syncs += 1
        if _COLLECTOR.syncs == 1:
            _COLLECTOR.threshold = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, *_COLLECTOR.threshold[1:])
    try:
        yield
    finally:
        with _COLLECTOR.lock:
            _COLLECTOR.syncs -= 1
            if not _COLLECTOR.syncs:
                gc.set_threshold(*_COLLECTOR.threshold)
                gc.unfreeze()


def _duplicate_tenants(provider: Provider, config: Mapping[str, t.Any]) -> list[str]:
    names = [spec.key for spec in provider.tenants(config)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
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


if __name__ == "__main__":
    TapLmsUnified.cli()

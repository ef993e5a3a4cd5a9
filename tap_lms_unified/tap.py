"""tap-lms-unified: the Singer tap, and one run per invocation.

What is specific to one unified API lives in its module under `providers/`; this module
only talks to the `Provider` interface (provider.py) found in the registry. The settings
and their checks are in settings.py.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import typing as t
from functools import cached_property

from singer_sdk import Tap
from singer_sdk.exceptions import ConfigValidationError

from tap_lms_unified import settings
from tap_lms_unified.errors import TENANT_ERRORS, Interrupted
from tap_lms_unified.output import Lines, SingerWriter
from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.reading import ReadingStream
from tap_lms_unified.run import Run
from tap_lms_unified.sdk_private import SdkTap
from tap_lms_unified.state import check_shape, migrate

if t.TYPE_CHECKING:
    from singer_sdk import Stream

    from tap_lms_unified.provider import Provider


class TapLmsUnified(SdkTap, Tap):
    """Singer tap for the unified LMS APIs (learners, progress, courses, skills)."""

    name = "tap-lms-unified"
    message_writer_class = SingerWriter
    #: The termination signal received, if any (the run then stops; see on_termination).
    _interrupted: int | None = None
    # Discovery validates the configuration exactly as a sync does.
    dynamic_catalog = True

    config_jsonschema = settings.CONFIG_SCHEMA

    def __init__(self, *args: t.Any, validate_config: bool = True, **kwargs: t.Any) -> None:
        try:
            super().__init__(*args, validate_config=validate_config, **kwargs)
        except ConfigValidationError as exc:
            raise self._with_hints(exc) from None
        if validate_config:
            self._check_settings()
            self._check_catalog()

    def _with_hints(self, exc: ConfigValidationError) -> ConfigValidationError:
        """The SDK's errors, with "did you mean" for a mistyped value of an enumeration."""
        hinted = settings.enum_errors(self.config)
        if not hinted:
            return exc
        names = {error.split("'", 2)[1] for error in hinted}
        others = [
            e for e in exc.errors or [] if not any(e.endswith(f"config[{n!r}]") for n in names)
        ]
        return ConfigValidationError(str(exc), errors=[*hinted, *others])

    def load_state(self, state: dict[str, t.Any]) -> None:
        """Check the state's shape, and read stream-level bookmarks as the single tenant's."""
        check_shape(state)
        provider = PROVIDERS.get(str(self.config.get("provider")))
        if provider is not None and state:
            state = migrate(
                state,
                tenant_field=provider.tenancy.field,
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
        errors = settings.errors(self.config)
        if errors:
            raise ConfigValidationError("Config validation failed", errors=errors)
        for warning in settings.warnings(self.config, self.provider):
            self.logger.warning(warning)

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

    # -- a run ---------------------------------------------------------------------------

    # The SDK marks sync_all final yet has no after-sync hook; this only wraps it.
    def sync_all(self) -> None:  # type: ignore[misc]
        """Sync every selected stream, then fail the run if a tenant failed.

        A failed tenant must make the exit code non-zero after the other tenants have
        finished and their state was written.
        """
        self.run.begin(sum(1 for stream in self.streams.values() if stream.selected))
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
        except BaseException:
            self.run.close()
            raise
        self.run.finish()

    def test_connection(self) -> None:
        """One request per tenant and endpoint (the first page); raise if any failed."""
        run = self.run
        streams = [s for s in reversed(self.streams.values()) if isinstance(s, ReadingStream)]
        endpoints = {stream.path: stream for stream in streams}
        for tenant in run.tenants.values():
            for stream in endpoints.values():
                context = {run.provider.tenancy.field: tenant.key}
                try:
                    stream.plan(context)  # its filter decided as for a sync
                    response = stream.fetch_page(context, None, first=True)
                    records = len(stream.records_of(response.content))
                except TENANT_ERRORS as exc:
                    run.fail_tenant(tenant, stream.name, exc)
                    break
                self.logger.info(
                    "Connection test: tenant %s, %s: ok (%d records on the first page)",
                    tenant.key,
                    stream.endpoint,
                    records,
                )
        run.finish()

    # -- signals: whole messages, each once, then the final STATE and 128 + signal ------

    def on_termination(self, signum: int) -> None:
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
        self.state_writer.write_state(self.state)  # the SDK's final STATE, as it did
        self.flush_output()
        self.run.close()
        self.run.summarise()
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
        return [stream_class(tap=self, run=self.run) for stream_class in self.provider.streams]  # type: ignore[call-arg]


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


if __name__ == "__main__":
    TapLmsUnified.cli()

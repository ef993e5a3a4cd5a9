"""`source-lms-unified`: the tap as an Airbyte source (spec, check, discover, read).

Every stdout line is one Airbyte message; logs are LOG messages on the same stdout. Exit
codes: 0, or 1 after a TRACE ERROR (`discover`, `read`). `check` always exits 0 and says
FAILED in its CONNECTION_STATUS, as Airbyte expects.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
import typing as t
from pathlib import Path

import requests

from tap_lms_unified.airbyte import bridge
from tap_lms_unified.airbyte import messages as ab
from tap_lms_unified.airbyte.writer import AirbyteWriter, LogHandler, NullWriter, Output

if t.TYPE_CHECKING:
    from collections.abc import Iterator

LOGGER = logging.getLogger("tap-lms-unified.airbyte")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="source-lms-unified",
        description="The LMS tap (" + " / ".join(bridge.provider_labels()) + ") as an Airbyte "
        "source.",
    )
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("spec", help="print the connector specification")
    for name, text in (
        ("check", "check the settings and reach every tenant"),
        ("discover", "print the catalog of streams"),
        ("read", "read records of a configured catalog"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", required=True, type=Path)
        if name == "read":
            command.add_argument("--catalog", required=True, type=Path)
            command.add_argument("--state", type=Path)
    return p


def main(argv: list[str] | None = None, *, stdout: t.BinaryIO | None = None) -> int:
    """Run one command; returns the exit code."""
    args = parser().parse_args(argv)
    output = Output(stdout)
    with _airbyte_logging(output):
        try:
            if args.command == "spec":
                title = "LMS unified (" + ", ".join(bridge.provider_labels()) + ")"
                output.write(ab.spec_message(bridge.config_schema(), title))
                return 0
            if args.command == "check":
                return check(args, output)
            if args.command == "discover":
                return discover(args, output)
            return read(args, output)
        finally:
            output.flush()


def run() -> None:
    """Console script entry point."""
    sys.exit(main())


# ---------------------------------------------------------------- commands


def check(args: argparse.Namespace, output: Output) -> int:
    """The settings checks, then one request per tenant and endpoint (`Run.test_connection`)."""
    try:
        config = _config(args, output)
        tap = bridge.make_tap(config, writer=NullWriter())  # every settings check
        tenants = bridge.tenant_names(tap)
    except Exception as exc:  # check reports, it does not fail
        output.write(ab.connection_status(ab.FAILED, output.text(describe(exc))))
        return 0
    provider = str(config.get("provider"))
    try:
        bridge.connection_test(tap)
    except Exception as exc:
        failures = bridge.failed_tenants(tap)
        if failures:
            details = "; ".join(
                f"{f.tenant}: {f.stream + ': ' if f.stream else ''}{f.message}" for f in failures
            )
            message = f"{len(failures)} of {len(tenants)} {provider} tenants failed: {details}"
        else:
            message = describe(exc)
        output.write(ab.connection_status(ab.FAILED, output.text(message)))
        return 0
    message = f"{provider}: {len(tenants)} tenant(s) answered on every endpoint: " + ", ".join(
        tenants
    )
    output.write(ab.connection_status(ab.SUCCEEDED, output.text(message)))
    return 0


def discover(args: argparse.Namespace, output: Output) -> int:
    try:
        tap = bridge.make_tap(_config(args, output), writer=NullWriter())
        streams = [
            ab.airbyte_stream(s.name, s.schema, s.primary_keys, s.replication_key)
            for s in tap.streams.values()
        ]
    except Exception as exc:  # reported as a TRACE ERROR
        _error_traces(output, exc, [])
        return 1
    output.write(ab.catalog_message(streams))
    return 0


def read(args: argparse.Namespace, output: Output) -> int:
    tap: bridge.TapLmsUnified | None = None
    writer: AirbyteWriter | None = None
    error: BaseException | None = None
    try:
        config = _config(args, output)
        # Airbyte replaces full-refresh data itself: no ACTIVATE_VERSION (on by default).
        config["emit_activate_version_messages"] = False
        configured = ab.configured_streams(_load_json(args.catalog, "catalog"))
        state = _load_json(args.state, "state") if args.state else None
        discovered = bridge.make_tap(config, writer=NullWriter())
        known = discovered.streams
        unknown = [c.name for c in configured if c.name not in known]
        if unknown:
            msg = (
                f"the configured catalog names streams that provider "
                f"'{config.get('provider')}' does not have: {', '.join(unknown)} "
                f"(available: {', '.join(known)})"
            )
            raise ab.InputError(msg)
        incremental = set()
        for stream in configured:
            if stream.sync_mode != ab.INCREMENTAL:
                continue
            if known[stream.name].replication_key:
                incremental.add(stream.name)
            else:
                LOGGER.info("Stream %s has no cursor: read in full (full_refresh).", stream.name)
        bookmarks = ab.singer_bookmarks(state, known)
        singer_state = {"bookmarks": {k: v for k, v in bookmarks.items() if k in incremental}}
        catalog = ab.singer_catalog(
            discovered.catalog_dict, {c.name: c for c in configured}, incremental
        )
        writer = AirbyteWriter(
            output,
            streams=[c.name for c in configured],
            failing=lambda: tap is not None and bool(bridge.failed_tenants(tap)),
            initial_states=singer_state["bookmarks"],
        )
        tap = bridge.make_tap(config, writer=writer, state=singer_state, catalog=catalog)
        tap.sync_all()  # flushes; raises when a tenant failed (or at once with fail_fast)
    except Exception as exc:  # settings, inputs, failed tenants, a failure of the tap itself
        error = exc
    except SystemExit:  # interrupted (128 + signal) after the final STATE: mark it so
        if writer is not None:
            writer.finish(complete=False)
        raise
    if writer is not None:
        writer.finish(complete=error is None)
    if error is None:
        return 0
    _error_traces(output, error, bridge.failed_tenants(tap) if tap is not None else [])
    return 1


# ---------------------------------------------------------------- helpers


def _config(args: argparse.Namespace, output: Output) -> dict[str, t.Any]:
    config = _load_json(args.config, "config")
    if not isinstance(config, dict):
        raise ab.InputError("the config must be a JSON object")
    output.redact = bridge.Redactor(ab.secret_values(config, bridge.config_schema()))
    return config


def _load_json(path: Path, what: str) -> t.Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ab.InputError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ab.InputError(f"the {what} file {path} is not valid JSON: {exc}") from exc


def describe(exc: BaseException) -> str:
    """A readable one-line error: every failed setting for a config error."""
    if isinstance(exc, bridge.ConfigValidationError) and exc.errors:
        return f"{exc}: " + "; ".join(exc.errors)
    return str(exc) or type(exc).__name__


def failure_type(exc: BaseException | None) -> str:
    """config_error: settings or credentials; transient_error: retries ran out or the
    network failed, or the integration is not ready yet; system_error: anything else."""
    if isinstance(
        exc,
        bridge.ConfigValidationError
        | bridge.AuthenticationError
        | bridge.StateError
        | ab.InputError,
    ):
        return ab.CONFIG_ERROR
    if isinstance(
        exc,
        bridge.RetriableAPIError
        | bridge.IntegrationNotReadyError
        | requests.exceptions.RequestException
        | ConnectionError
        | TimeoutError,
    ):
        return ab.TRANSIENT_ERROR
    return ab.SYSTEM_ERROR


def _error_traces(
    output: Output, error: BaseException, failures: list[bridge.TenantFailure]
) -> None:
    """One TRACE ERROR per failed tenant (or for the error itself), secrets redacted."""
    summary = output.text(describe(error))
    tenant_errors = {id(f.error) for f in failures}
    if not failures or (
        id(error) not in tenant_errors and not isinstance(error, bridge.TenantsFailedError)
    ):
        output.write(
            ab.error_trace(
                summary,
                failure_type(error),
                internal_message=f"{type(error).__name__}: {summary}",
                stack_trace=output.text("".join(traceback.format_exception(error))),
            )
        )
    for failure in failures:
        text = f"Tenant {failure.tenant} failed"
        if failure.stream:
            text += f" on stream {failure.stream}"
        output.write(
            ab.error_trace(
                output.text(f"{text}: {failure.message}"),
                failure_type(failure.error),
                internal_message=summary,
                stream=failure.stream,
            )
        )


class _Quiet(logging.Filter):
    """Drops per-request METRIC lines, unless LOG_LEVEL=DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("singer_sdk.metrics"):
            return record.levelno >= logging.WARNING or logging.getLogger().level <= logging.DEBUG
        return True


QUIET = _Quiet()


@contextlib.contextmanager
def _airbyte_logging(output: Output) -> Iterator[None]:
    """Log records as LOG messages, for the duration of one command."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    handler = LogHandler(output)
    handler.addFilter(QUIET)
    root.handlers = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers = saved_handlers
        root.setLevel(saved_level)

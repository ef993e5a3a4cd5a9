"""`tap-lms-unified`: the SDK's command line, with operational failures as one clear line.

Exit codes:

| code | meaning |
|---|---|
| 0 | the run (or discovery, or the connection test) succeeded |
| 1 | bad settings or input files: nothing was requested |
| 2 | wrong command-line usage |
| 3 | the API failed: authentication, not ready, unreachable, retries exhausted, or |
|   | one or more tenants failed (the others finished and their state was written) |
| 70 | a bug in the tap: the traceback is printed |
| 128 + signal | interrupted (130 for Ctrl-C, 143 for SIGTERM), after the final STATE |

Tracebacks of operational failures appear only with debug logging
(`TAP_LMS_UNIFIED_LOG_LEVEL=debug`).
"""

from __future__ import annotations

import json
import logging
import sys
import typing as t
from pathlib import Path

import click
import requests
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError, RetriableAPIError

from tap_lms_unified.state import StateError, check_shape
from tap_lms_unified.tap import TapLmsUnified

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_API, EXIT_BUG = 0, 1, 2, 3, 70

#: Operational failures: the API or the network, not the tap.
API_ERRORS = (FatalAPIError, RetriableAPIError, requests.exceptions.RequestException)


class InputFileError(Exception):
    """A --config, --state or --catalog file that cannot be used."""


def main(argv: Sequence[str] | None = None) -> t.NoReturn:
    """Run the tap's command line and exit with a code that says what happened."""
    args = list(sys.argv[1:] if argv is None else argv)
    logger = TapLmsUnified.logger
    try:
        check_input_files(args)
        code = TapLmsUnified.cli.main(args=args, prog_name="tap-lms-unified", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE
    except click.Abort:
        code = 128 + 2
    except InputFileError as exc:  # before the SDK has set up logging
        print(f"ERROR tap-lms-unified: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except ConfigValidationError as exc:
        for error in exc.errors or [str(exc)]:
            logger.error("Config validation error: %s", error)
        code = EXIT_CONFIG
    except StateError as exc:
        logger.error("The state is not a Singer state: %s", exc)
        code = EXIT_CONFIG
    except API_ERRORS as exc:
        _report(logger, "Run failed: %s", exc)
        code = EXIT_API
    except Exception:
        logger.exception("tap-lms-unified stopped on an unexpected error (a bug: please report)")
        code = EXIT_BUG
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _report(logger: logging.Logger, message: str, exc: BaseException) -> None:
    """One line; the traceback only when debug logging is on."""
    logger.error(message, exc, exc_info=logger.isEnabledFor(logging.DEBUG))


def check_input_files(args: Sequence[str]) -> None:
    """Fail before any request on a --config/--state/--catalog file that cannot be read."""
    checks: dict[str, Callable[[t.Any], None]] = {
        "--config": _must_be_object,
        "--state": check_shape,
        "--catalog": _must_be_object,
    }
    for option, path in _file_options(args):
        if option == "--config" and path == "ENV":
            continue
        kind = option.lstrip("-")
        file = Path(path)
        if not file.is_file():
            raise InputFileError(f"The {kind} file '{path}' does not exist")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(f"The {kind} file '{path}' cannot be read: {exc}") from exc
        if not text.strip():
            raise InputFileError(f"The {kind} file '{path}' is empty")
        try:
            content = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"The {kind} file '{path}' is not JSON: {exc}") from exc
        try:
            checks[option](content)
        except StateError as exc:
            raise InputFileError(f"The {kind} file '{path}': {exc}") from exc


def _must_be_object(content: t.Any) -> None:
    if not isinstance(content, dict):
        raise StateError("must hold a JSON object")


def _file_options(args: Sequence[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for position, arg in enumerate(args):
        for option in ("--config", "--state", "--catalog"):
            if arg == option and position + 1 < len(args):
                found.append((option, args[position + 1]))
            elif arg.startswith(option + "="):
                found.append((option, arg.split("=", 1)[1]))
    return found

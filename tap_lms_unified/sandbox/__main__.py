"""``tap-lms-unified-sandbox``: run the sandbox in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tap_lms_unified.sandbox.options import DEFAULT_BINDBEE_TOKENS, DEFAULT_KOMBO_TENANTS
from tap_lms_unified.sandbox.server import Sandbox, is_loopback


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tap-lms-unified-sandbox",
        description="Local imitation of the Kombo and Bindbee unified LMS APIs.",
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kombo-users", type=int, default=50)
    p.add_argument("--progress-per-user", type=int, default=3)
    p.add_argument("--kombo-courses", type=int, default=10)
    p.add_argument("--kombo-skills", type=int, default=8)
    p.add_argument("--kombo-shape", choices=("legacy", "current"), default="legacy")
    p.add_argument(
        "--kombo-tenant",
        action="append",
        metavar="INTEGRATION_ID",
        help=f"accepted X-Integration-Id (repeatable; default {list(DEFAULT_KOMBO_TENANTS)})",
    )
    p.add_argument("--kombo-budget-per-minute", type=int, default=None)
    p.add_argument(
        "--kombo-budget-window-s",
        type=float,
        default=60.0,
        help="length of a Kombo budget window in seconds (default 60)",
    )
    p.add_argument("--bindbee-users", type=int, default=40)
    p.add_argument("--bindbee-courses", type=int, default=10)
    p.add_argument("--bindbee-enrollments", type=int, default=None)
    p.add_argument("--bindbee-completions", type=int, default=None)
    p.add_argument(
        "--bindbee-token",
        action="append",
        metavar="TOKEN=NAME",
        help="accepted x-connector-token and its connector name (repeatable; "
        f"default {next(iter(DEFAULT_BINDBEE_TOKENS))}=acme)",
    )
    p.add_argument("--bindbee-budget-per-minute", type=int, default=200)
    p.add_argument(
        "--bindbee-budget-window-s",
        type=float,
        default=60.0,
        help="length of a Bindbee budget window in seconds (default 60): a benchmark of "
        "budget use can take a few short windows instead of minutes",
    )
    p.add_argument("--bindbee-empty-page-every", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0)
    p.add_argument("--ready-file", type=Path, help="write the base URL here once listening")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def _tokens(values: list[str] | None) -> dict[str, str]:
    if not values:
        return dict(DEFAULT_BINDBEE_TOKENS)
    out = {}
    for value in values:
        token, sep, name = value.partition("=")
        if not sep or not token or not name:
            raise SystemExit(f"--bindbee-token expects TOKEN=NAME, got {value!r}")
        out[token] = name
    return out


def main() -> None:
    args = _parser().parse_args()
    if not is_loopback(args.host):
        print(f"refusing to bind to non-loopback host {args.host!r}", file=sys.stderr)
        raise SystemExit(2)
    sandbox = Sandbox(
        seed=args.seed,
        kombo_users=args.kombo_users,
        progress_per_user=args.progress_per_user,
        kombo_courses=args.kombo_courses,
        kombo_skills=args.kombo_skills,
        kombo_legacy_users=args.kombo_shape == "legacy",
        kombo_tenants=tuple(args.kombo_tenant or DEFAULT_KOMBO_TENANTS),
        kombo_budget_per_minute=args.kombo_budget_per_minute,
        kombo_budget_window_s=args.kombo_budget_window_s,
        bindbee_users=args.bindbee_users,
        bindbee_courses=args.bindbee_courses,
        bindbee_enrollments=args.bindbee_enrollments,
        bindbee_completions=args.bindbee_completions,
        bindbee_tokens=_tokens(args.bindbee_token),
        bindbee_budget_per_minute=args.bindbee_budget_per_minute,
        bindbee_budget_window_s=args.bindbee_budget_window_s,
        bindbee_empty_page_every=args.bindbee_empty_page_every,
        latency_ms=args.latency_ms,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
    )
    done = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sandbox.start()
    try:
        if args.ready_file is not None:  # written before the line: either means "ready"
            tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
            tmp.write_text(sandbox.url + "\n")
            tmp.replace(args.ready_file)
        print(f"sandbox listening on {sandbox.url}", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()

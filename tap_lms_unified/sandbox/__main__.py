"""``tap-lms-unified-sandbox``: run the sandbox in the foreground until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from tap_lms_unified.sandbox.providers import PROVIDERS
from tap_lms_unified.sandbox.server import Sandbox, is_loopback


def _parser() -> argparse.ArgumentParser:
    *others, last = [p.title for p in PROVIDERS]
    titles = f"{', '.join(others)} and {last}" if others else last
    p = argparse.ArgumentParser(
        prog="tap-lms-unified-sandbox",
        description=f"Local imitation of the {titles} unified LMS APIs.",
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--port", type=int, default=0, help="port (0 = any free port)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0)
    p.add_argument("--ready-file", type=Path, help="write the base URL here once listening")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    for provider in PROVIDERS:
        title = f"{provider.title} fake (under {provider.prefix})"
        provider.add_arguments(p.add_argument_group(title))
    return p


def main() -> None:
    args = _parser().parse_args()
    if not is_loopback(args.host):
        print(f"refusing to bind to non-loopback host {args.host!r}", file=sys.stderr)
        raise SystemExit(2)
    settings: dict[str, Any] = {}
    for provider in PROVIDERS:
        settings.update(provider.settings_from(args))
    sandbox = Sandbox(
        seed=args.seed,
        latency_ms=args.latency_ms,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
        **settings,
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

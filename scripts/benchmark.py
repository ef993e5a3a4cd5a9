"""Benchmark: figures and ratios of the tap against the sandbox, measured in one run.

    scripts/benchmark              # all three scenarios (a few minutes)
    scripts/benchmark --quick      # smaller sizes, for a smoke test

1. CPU-bound: a full Kombo legacy-shape sync (users + progress) with no added latency;
   the tap's records/s and its wall time over that of a minimal baseline client (plain
   requests + msgspec walking the same pages and printing Singer RECORD lines).
2. Latency-bound: 8 Bindbee tenants x 20 pages, the sandbox adding 100 ms per response and
   enforcing each token's budget; wall time with max_concurrency=1 vs the default, 429s
   received, share of the aggregate request budget used.
3. Memory: peak RSS of a large Bindbee sync at two sizes (flat as data grows?) and the
   size of the final STATE message.

Every process is a real command: the sandbox (tap-lms-unified-sandbox), the tap
(tap-lms-unified) and the baseline run as subprocesses on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
KEY = "sandbox-api-key"
BASELINE = """
import sys, requests, msgspec
url, key, tenant = sys.argv[1:4]
decode, encode = msgspec.json.Decoder().decode, msgspec.json.Encoder().encode
out = sys.stdout.buffer
session, cursor = requests.Session(), None
headers = {"Authorization": f"Bearer {key}", "X-Integration-Id": tenant}
while True:
    params = {"page_size": 250, "include_deleted": "true", **({"cursor": cursor} if cursor else {})}
    body = decode(session.get(url + "/lms/users", params=params, headers=headers).content)
    for user in body["data"]["results"]:
        progress = user.pop("progress", None) or ()
        out.write(encode({"type": "RECORD", "stream": "users", "record": user}) + b"\\n")
        for item in progress:
            item["user_id"] = user["id"]
            out.write(encode({"type": "RECORD", "stream": "progress", "record": item}) + b"\\n")
    cursor = body["data"]["next"]
    if not cursor:
        break
"""


class Sandbox:
    """The sandbox as a separate process, so that it does not share the tap's CPU."""

    def __init__(self, *args: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        ready = Path(self.dir.name) / "url"
        self.process = subprocess.Popen(
            [BIN / "tap-lms-unified-sandbox", "--ready-file", str(ready), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text().strip():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.05)
        self.url = ready.read_text().strip()

    def requests(self) -> list[dict]:
        return t.cast(
            "list[dict]", requests.get(f"{self.url}/_sandbox/requests").json()["requests"]
        )

    def reset(self) -> None:
        requests.post(f"{self.url}/_sandbox/requests/reset")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)
        self.dir.cleanup()


def timed(command: list[str]) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS (KiB) of that process alone, and its last STATE line.

    The peak is the kernel's VmHWM of the process after exec, polled while it runs:
    a fork's rusage would also count the (large) benchmark process it was forked from.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    peak = [0]

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except (OSError, ValueError):
                break
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert process.stdout is not None
    last, state = b"", b""
    for line in process.stdout:
        last = line
        if line.startswith(b'{"type":"STATE"'):
            state = line
    process.wait()
    watcher.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {process.returncode}")
    return wall, peak[0], state or last


def tap(config: dict, streams: t.Collection[str] | None = None) -> list[str]:
    """The tap command for a config (and a catalog selecting `streams`)."""
    folder = Path(tempfile.mkdtemp(prefix="tap-bench-"))
    (folder / "config.json").write_text(json.dumps(config))
    command = [str(BIN / "tap-lms-unified"), "--config", str(folder / "config.json")]
    if streams is not None:
        catalog = json.loads(
            subprocess.run([*command, "--discover"], capture_output=True, check=True).stdout
        )
        for entry in catalog["streams"]:
            for item in entry["metadata"]:
                if item["breadcrumb"] == []:
                    item["metadata"]["selected"] = entry["tap_stream_id"] in streams
        (folder / "catalog.json").write_text(json.dumps(catalog))
        command += ["--catalog", str(folder / "catalog.json")]
    return command


def count_records(command: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, check=True)
    wall = time.perf_counter() - started
    return wall, result.stdout.count(b'"type":"RECORD"')


def cpu_bound(users: int, rows: list[tuple[str, str, str]]) -> None:
    with Sandbox("--kombo-users", str(users), "--progress-per-user", "3") as sb:
        url = f"{sb.url}/kombo/v1"
        baseline = [sys.executable, "-c", BASELINE, url, KEY, "sandbox:acme"]
        count_records(baseline)  # warm the sandbox's per-filter caches
        base_wall, base_records = count_records(baseline)
        config = {"provider": "kombo", "api_key": KEY, "integration_id": "sandbox:acme"}
        command = tap({**config, "api_url": url}, streams={"users", "progress"})
        tap_wall, tap_records = count_records(command)
    expected = users * 4
    ratio = tap_wall / base_wall
    rows += [
        (
            "1 cpu",
            "records (users + progress)",
            f"{tap_records:,} (baseline {base_records:,}, expected {expected:,})",
        ),
        (
            "1 cpu",
            "baseline wall / records per s",
            f"{base_wall:.2f} s / {base_records / base_wall:,.0f}",
        ),
        ("1 cpu", "tap wall / records per s", f"{tap_wall:.2f} s / {tap_records / tap_wall:,.0f}"),
        (
            "1 cpu",
            "ratio tap / baseline (target <= 3.0)",
            f"{ratio:.2f} {'OK' if ratio <= 3.0 else 'MISSED'}",
        ),
    ]


def latency_bound(tenants: int, pages: int, rows: list[tuple[str, str, str]]) -> None:
    page_size, budget = 50, 200
    tokens = {f"bench-token-{i:02d}-0123456789": f"tenant{i:02d}" for i in range(tenants)}
    flags = [
        arg for token, name in tokens.items() for arg in ("--bindbee-token", f"{token}={name}")
    ]
    with Sandbox(
        "--bindbee-users",
        str(page_size * pages - 1),
        "--latency-ms",
        "100",
        "--bindbee-budget-per-minute",
        str(budget),
        *flags,
    ) as sb:
        config = {
            "provider": "bindbee",
            "api_key": KEY,
            "api_url": f"{sb.url}/bindbee",
            "page_size": page_size,
            "integrations": [{"connector_token": k, "name": v} for k, v in tokens.items()],
            "max_requests_per_minute": budget,
        }
        results = {}
        for label, concurrency in (("sequential (max_concurrency=1)", 1), ("default (8)", None)):
            sb.reset()
            run_config = (
                dict(config) if concurrency is None else {**config, "max_concurrency": concurrency}
            )
            wall, records = count_records(tap(run_config, streams={"users"}))
            if records != tenants * (page_size * pages - 1):
                raise RuntimeError(f"{label}: {records} records")
            log = sb.requests()
            throttled = sum(1 for r in log if r["status"] == 429)
            results[label] = wall
            rows.append(
                (
                    "2 latency",
                    f"{label}: wall / requests / 429s / peak budget use",
                    f"{wall:.2f} s / {len(log)} / {throttled} / {peak_share(log, budget):.0%}",
                )
            )
        speedup = results["sequential (max_concurrency=1)"] / results["default (8)"]
        rows.append(
            (
                "2 latency",
                "speed-up default vs sequential (target >= 6x)",
                f"{speedup:.1f}x {'OK' if speedup >= 6 else 'MISSED'}",
            )
        )


def peak_share(log: list[dict], budget: int) -> float:
    """The busiest token's requests in any 60 s window, as a share of its budget."""
    busiest = 0
    for name in {r["tenant"] for r in log}:
        times = sorted(r["time"] for r in log if r["tenant"] == name)
        busiest = max(busiest, *(sum(1 for u in times if s <= u < s + 60) for s in times))
    return busiest / budget


def memory(sizes: t.Sequence[int], rows: list[tuple[str, str, str]]) -> None:
    for size in sizes:
        with Sandbox(
            "--bindbee-users",
            str(size),
            "--bindbee-token",
            "bench-mem-token-01=mem",
            "--bindbee-budget-per-minute",
            "100000000",  # memory is measured here, not the rate limiter
        ) as sb:
            config = {
                "provider": "bindbee",
                "api_key": KEY,
                "api_url": f"{sb.url}/bindbee",
                "connector_token": "bench-mem-token-01",
                "connector_name": "mem",
                "page_size": 200,
                "max_requests_per_minute": 100_000,
            }
            wall, peak_kib, state = timed(tap(config, streams={"users"}))
        rows.append(
            (
                "3 memory",
                f"{size:,} records: wall / peak RSS (target <= 200 MB)",
                f"{wall:.1f} s / {peak_kib / 1024:.0f} MB "
                f"{'OK' if 0 < peak_kib / 1024 <= 200 else 'MISSED'}",
            )
        )
        rows.append(("3 memory", f"{size:,} records: final STATE message", f"{len(state)} bytes"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--only", choices=["cpu", "latency", "memory"])
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    if args.only in (None, "cpu"):
        cpu_bound(10_000 if args.quick else 100_000, rows)
    if args.only in (None, "latency"):
        latency_bound(8, 5 if args.quick else 20, rows)
    if args.only in (None, "memory"):
        memory((20_000, 100_000) if args.quick else (250_000, 1_000_000), rows)
    width = max(len(r[1]) for r in rows)
    print(
        f"\ntap-lms-unified benchmark — {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    for scenario, name, value in rows:
        print(f"{scenario:<10} {name:<{width}}  {value}")
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

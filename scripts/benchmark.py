"""Benchmark: figures and ratios of the tap against the sandbox, measured in one run.

    scripts/benchmark              # every scenario (a few minutes)
    scripts/benchmark --quick      # smaller sizes, for a smoke test
    scripts/benchmark --only latency,budget

Scenarios (the sandbox adds 100 ms to every response where latency matters):

1. latency: default settings vs `max_concurrency: 1`, each with wall time, requests, 429s
   and peak RSS:
   - Kombo, 1 tenant, all streams (2,000 users, current shape);
   - Bindbee, 1 tenant, all 7 streams (2,000 users, 4,000 enrollments, 4,000 completions,
     page_size 200);
   - Kombo, 8 tenants x 20 pages of 200 users, users only.
   For a one-tenant row, its ideal: the tap's startup (its wall time with no stream
   selected) + the longest walk (pages x per-page time of that endpoint, measured with a
   plain client walking it alone). Targets: default <= 1.25 x ideal; 8 tenants >= 6.5x.
   Beside the 8 tenants' figure, the floor: the tap's startup + a plain client walking
   the same 8 tenants in 8 threads, and the speed-up that floor would have.
2. budget: one Bindbee tenant, three streams, more pages than one budget window serves,
   the sandbox enforcing a short window: rows per window / (budget x page size) >= 0.9,
   zero 429s.
3. cpu: a Kombo legacy-shape sync (users + progress) with no added latency; the tap's
   CPU time (user + system, of its process) over that of a plain client (requests +
   orjson walking the same pages and printing Singer RECORD lines), medians of three
   interleaved runs of each. Target <= 2.0.
4. memory: peak RSS of a 1,000,000-record sync (<= 200 MB) and its final STATE's size.

The sandbox answers each page `latency` after its request, or after rendering it if that
took longer, and keeps rendered Kombo pages until its data changes (see README): it
models an API that answers within its latency however many clients ask.

Every process is a real command: the sandbox (tap-lms-unified-sandbox), the tap
(tap-lms-unified) and the plain client run as subprocesses on 127.0.0.1.
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
from dataclasses import dataclass
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
KEY = "sandbox-api-key"
LATENCY_MS = 100
#: Runs of the plain client and of the tap in the CPU scenario (interleaved; medians).
CPU_RUNS = 3

#: The plain client of the CPU ratio: walks Kombo's legacy users and prints RECORD lines.
PLAIN_SYNC = """
import sys, requests, orjson
url, key, tenant = sys.argv[1:4]
out, dumps = sys.stdout.buffer, orjson.dumps
session, cursor = requests.Session(), None
headers = {"Authorization": f"Bearer {key}", "X-Integration-Id": tenant}
while True:
    params = {"page_size": 250, "include_deleted": "true", **({"cursor": cursor} if cursor else {})}
    body = orjson.loads(session.get(url + "/lms/users", params=params, headers=headers).content)
    for user in body["data"]["results"]:
        progress = user.pop("progress", None) or ()
        out.write(dumps({"type": "RECORD", "stream": "users", "record": user}) + b"\\n")
        for item in progress:
            item["user_id"] = user["id"]
            out.write(dumps({"type": "RECORD", "stream": "progress", "record": item}) + b"\\n")
    cursor = body["data"]["next"]
    if not cursor:
        break
"""


class Sandbox:
    """The sandbox as a separate process, so that it does not share the tap's GIL."""

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
        log = requests.get(f"{self.url}/_sandbox/requests").json()["requests"]
        return [r for r in log if not r["path"].startswith("/_sandbox")]

    def reset(self) -> None:
        requests.post(f"{self.url}/_sandbox/requests/reset")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)
        self.dir.cleanup()


@dataclass
class Measure:
    wall: float
    cpu: float  # user + system seconds of the process
    peak_mb: float
    records: int
    state: bytes


def measure(command: list[str]) -> Measure:
    """Wall seconds, peak RSS of that process alone, RECORD lines and the last STATE line.

    The peak is the kernel's VmHWM of the process after exec, polled while it runs:
    a fork's rusage would also count the (large) benchmark process it was forked from.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while not done.is_set():
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
    records, state = 0, b""
    for line in process.stdout:
        if line.startswith(b'{"type":"RECORD"'):
            records += 1
        elif line.startswith(b'{"type":"STATE"'):
            state = line
    _, status, usage = os.wait4(process.pid, 0)  # its own CPU time, not its children's
    process.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    watcher.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited with {process.returncode}")
    return Measure(wall, usage.ru_utime + usage.ru_stime, peak[0] / 1024, records, state)


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


Rows = list[tuple[str, str, str]]


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def plain_walk(url: str, headers: dict[str, str], params: dict[str, t.Any], page: t.Any) -> tuple:
    """(pages, seconds) of one endpoint walked alone by a plain client (requests)."""
    session, cursor, pages = requests.Session(), None, 0
    started = time.perf_counter()
    while True:
        response = session.get(
            url, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        response.raise_for_status()
        pages += 1
        cursor = page(response.json())
        if not cursor:
            return pages, time.perf_counter() - started


def run_pair(
    sb: Sandbox, config: dict, streams: t.Collection[str] | None
) -> dict[str, dict[str, t.Any]]:
    """The tap with default settings and with max_concurrency 1 on one sandbox."""
    out: dict[str, dict[str, t.Any]] = {}
    for label, extra in (("default", {}), ("sequential", {"max_concurrency": 1})):
        sb.reset()
        result = measure(tap({**config, **extra}, streams))
        log = sb.requests()
        out[label] = {
            "measure": result,
            "requests": len(log),
            "throttled": sum(1 for r in log if r["status"] == 429),
        }
    if out["default"]["measure"].records != out["sequential"]["measure"].records:
        raise RuntimeError("default and sequential runs emitted different record counts")
    return out


def startup(config: dict) -> float:
    """The tap's fixed cost: its wall time with no stream selected."""
    return measure(tap(config, streams=set())).wall


def latency_row(
    rows: Rows,
    name: str,
    pair: dict[str, dict[str, t.Any]],
    *,
    ideal: tuple[float, str] | None = None,
    speedup_target: float | None = None,
) -> None:
    d, s = pair["default"], pair["sequential"]
    dm, sm = d["measure"], s["measure"]
    speedup = sm.wall / dm.wall
    rows.append(
        (
            name,
            "default / sequential: wall, speed-up",
            f"{dm.wall:.2f} s / {sm.wall:.2f} s, {speedup:.1f}x"
            + (
                f" (target >= {speedup_target}x) {verdict(speedup >= speedup_target)}"
                if speedup_target
                else ""
            ),
        )
    )
    rows.append(
        (
            name,
            "default / sequential: records, requests, 429s, peak RSS",
            f"{dm.records:,} / {sm.records:,}, {d['requests']} / {s['requests']}, "
            f"{d['throttled']} / {s['throttled']}, {dm.peak_mb:.0f} / {sm.peak_mb:.0f} MB",
        )
    )
    if ideal is not None:
        seconds, how = ideal
        ratio = dm.wall / seconds
        rows.append((name, "ideal (startup + longest walk)", f"{seconds:.2f} s = {how}"))
        rows.append(
            (name, "default / ideal (target <= 1.25)", f"{ratio:.2f} {verdict(ratio <= 1.25)}")
        )


def ideal_of(start: float, walks: dict[str, tuple[int, float]]) -> tuple[float, str]:
    name, (pages, seconds) = max(walks.items(), key=lambda kv: kv[1][1])
    return (
        start + seconds,
        f"{start:.2f} s startup + {name} {pages} pages x {seconds / pages * 1000:.0f} ms "
        f"(walks: {', '.join(f'{n} {p}' for n, (p, _) in sorted(walks.items()))} pages)",
    )


def kombo_one_tenant(rows: Rows, users: int) -> None:
    name = "kombo 1 tenant, all streams"
    with Sandbox(
        "--kombo-users", str(users), "--kombo-shape", "current", "--latency-ms", str(LATENCY_MS)
    ) as sb:
        url = f"{sb.url}/kombo/v1"
        config = {
            "provider": "kombo",
            "api_key": KEY,
            "integration_id": "sandbox:acme",
            "api_url": url,
        }
        headers = {"Authorization": f"Bearer {KEY}", "X-Integration-Id": "sandbox:acme"}
        walks = {
            path: plain_walk(
                f"{url}/lms/{path}",
                headers,
                {"page_size": 250, "include_deleted": "true"},
                lambda body: body["data"]["next"],
            )
            for path in ("users", "course-progressions", "courses", "skills")
        }
        ideal = ideal_of(startup(config), walks)
        latency_row(rows, name, run_pair(sb, config, None), ideal=ideal)


def bindbee_one_tenant(rows: Rows, users: int) -> None:
    name = "bindbee 1 tenant, 7 streams"
    token = "bench-token-acme-0123456789"
    with Sandbox(
        "--bindbee-users",
        str(users),
        "--bindbee-enrollments",
        str(2 * users),
        "--bindbee-completions",
        str(2 * users),
        "--bindbee-token",
        f"{token}=acme",
        "--latency-ms",
        str(LATENCY_MS),
    ) as sb:
        url = f"{sb.url}/bindbee"
        config = {
            "provider": "bindbee",
            "api_key": KEY,
            "connector_token": token,
            "connector_name": "acme",
            "api_url": url,
            "page_size": 200,
        }
        headers = {"Authorization": f"Bearer {KEY}", "x-connector-token": token}
        models = (
            "users",
            "enrollments",
            "completions",
            "courses",
            "contents",
            "skills",
            "categories",
        )
        walks = {
            model: plain_walk(
                f"{url}/api/lms/v1/{model}",
                headers,
                {"page_size": 200, "include_custom_fields": "true", "include_raw_data": "false"},
                lambda body: body["cursor"],
            )
            for model in models
        }
        sb.reset()
        ideal = ideal_of(startup(config), walks)
        latency_row(rows, name, run_pair(sb, config, None), ideal=ideal)


def kombo_tenants(rows: Rows, tenants: int, pages: int) -> None:
    name = f"kombo {tenants} tenants x {pages} pages"
    ids = [f"bench:tenant{i:02d}" for i in range(tenants)]
    flags = [arg for i in ids for arg in ("--kombo-tenant", i)]
    with Sandbox("--kombo-users", str(200 * pages), "--latency-ms", str(LATENCY_MS), *flags) as sb:
        config = {
            "provider": "kombo",
            "api_key": KEY,
            "api_url": f"{sb.url}/kombo/v1",
            "integrations": [{"integration_id": i} for i in ids],
            "page_size": 200,
        }
        # What this sandbox and machine allow: the same walks by a plain client, in threads.
        # The first round renders the pages (the sandbox's page cache), the second is the
        # floor: the tap's runs below get the same already-rendered pages.
        for _ in range(2):
            started = time.perf_counter()
            threads = [
                threading.Thread(
                    target=plain_walk,
                    args=(
                        f"{sb.url}/kombo/v1/lms/users",
                        {"Authorization": f"Bearer {KEY}", "X-Integration-Id": i},
                        {"page_size": 200, "include_deleted": "true"},
                        lambda body: body["data"]["next"],
                    ),
                )
                for i in ids
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            plain = time.perf_counter() - started
        start = startup(config)
        pair = run_pair(sb, config, {"users"})
        latency_row(rows, name, pair, speedup_target=6.5)
        floor = start + plain
        rows.append(
            (
                name,
                f"floor: startup + a plain client's {tenants} walks in threads; its speed-up",
                f"{floor:.2f} s = {start:.2f} s + {plain:.2f} s; "
                f"{pair['sequential']['measure'].wall / floor:.1f}x",
            )
        )


def budget_use(rows: Rows, windows: float) -> None:
    """One tenant, three streams sharing a budget of `budget` requests per `window` s."""
    name = "budget use (bindbee)"
    budget, window, page_size = 30, 10.0, 200
    per_stream = int(budget * page_size * windows / 3)
    token = "bench-token-budget-0123456789"
    with Sandbox(
        "--bindbee-users",
        str(per_stream),
        "--bindbee-enrollments",
        str(per_stream),
        "--bindbee-completions",
        str(per_stream),
        "--bindbee-token",
        f"{token}=acme",
        "--latency-ms",
        str(LATENCY_MS),
        "--bindbee-budget-per-minute",
        str(budget),
        "--bindbee-budget-window-s",
        str(window),
    ) as sb:
        config = {
            "provider": "bindbee",
            "api_key": KEY,
            "connector_token": token,
            "connector_name": "acme",
            "api_url": f"{sb.url}/bindbee",
            "page_size": page_size,
            # The same rate per minute as the sandbox's short window.
            "max_requests_per_minute": int(budget * 60 / window),
        }
        result = measure(tap(config, {"users", "enrollments", "completions"}))
        log = sb.requests()
    ok = sorted(r["time"] for r in log if r["status"] == 200)
    throttled = sum(1 for r in log if r["status"] == 429)
    full = int((ok[-1] - ok[0]) // window)
    served = sum(1 for x in ok if x < ok[0] + full * window) if full else 0
    per_window = served * page_size / max(full, 1)
    use = per_window / (budget * page_size)
    rows.append(
        (
            name,
            f"{budget} requests / {window:.0f} s window, page_size {page_size}, 3 streams",
            f"{result.records:,} records in {result.wall:.1f} s, {len(log)} requests",
        )
    )
    rows.append(
        (
            name,
            "rows per window / (budget x page size) (target >= 0.9), 429s (target 0)",
            f"{per_window:,.0f} / {budget * page_size:,} = {use:.2f}, {throttled} "
            f"{verdict(use >= 0.9 and throttled == 0)}",
        )
    )


def cpu_bound(rows: Rows, users: int) -> None:
    name = "cpu (kombo legacy)"
    with Sandbox("--kombo-users", str(users), "--progress-per-user", "3") as sb:
        url = f"{sb.url}/kombo/v1"
        plain = [sys.executable, "-c", PLAIN_SYNC, url, KEY, "sandbox:acme"]
        measure(plain)  # warm the sandbox's caches (selections, rendered pages)
        config = {
            "provider": "kombo",
            "api_key": KEY,
            "integration_id": "sandbox:acme",
            "api_url": url,
        }
        command = tap(config, streams={"users", "progress"})
        # Interleaved, the median of each: the cores may be shared with other work.
        bases, mines = [], []
        for _ in range(CPU_RUNS):
            bases.append(measure(plain))
            mines.append(measure(command))
    base = sorted(bases, key=lambda m: m.cpu)[CPU_RUNS // 2]
    mine = sorted(mines, key=lambda m: m.cpu)[CPU_RUNS // 2]
    ratio = mine.cpu / base.cpu
    rows += [
        (
            name,
            "records (users + progress)",
            f"{mine.records:,} (plain {base.records:,}, expected {users * 4:,})",
        ),
        (
            name,
            f"plain client (requests + orjson): wall, CPU (user + sys), median of {CPU_RUNS}",
            f"{base.wall:.2f} s, {base.cpu:.2f} s (CPU of each: "
            + ", ".join(f"{m.cpu:.2f}" for m in bases)
            + ")",
        ),
        (
            name,
            f"tap: wall, CPU (user + sys), median of {CPU_RUNS}",
            f"{mine.wall:.2f} s, {mine.cpu:.2f} s (CPU of each: "
            + ", ".join(f"{m.cpu:.2f}" for m in mines)
            + ")",
        ),
        (name, "wall ratio tap / plain client", f"{mine.wall / base.wall:.2f}"),
        (
            name,
            "CPU ratio tap / plain client (target <= 2.0)",
            f"{ratio:.2f} {verdict(ratio <= 2.0)}",
        ),
    ]


def memory(rows: Rows, size: int) -> None:
    name = "memory"
    with Sandbox(
        "--bindbee-users",
        str(size),
        "--bindbee-token",
        "bench-mem-token-01=mem",
        "--bindbee-budget-per-minute",
        "100000000",  # memory is measured here, not the limiter
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
        result = measure(tap(config, streams={"users"}))
    rows.append(
        (
            name,
            f"{size:,} records: wall / peak RSS (target <= 200 MB)",
            f"{result.wall:.1f} s / {result.peak_mb:.0f} MB {verdict(0 < result.peak_mb <= 200)}",
        )
    )
    rows.append((name, f"{size:,} records: final STATE message", f"{len(result.state)} bytes"))


SCENARIOS = ("latency", "budget", "cpu", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    rows: Rows = []
    started = time.perf_counter()
    quick = args.quick
    if "latency" in only:
        kombo_one_tenant(rows, 500 if quick else 2_000)
        bindbee_one_tenant(rows, 500 if quick else 2_000)
        kombo_tenants(rows, 8, 5 if quick else 20)
    if "budget" in only:
        budget_use(rows, 1.5 if quick else 2.5)
    if "cpu" in only:
        cpu_bound(rows, 10_000 if quick else 100_000)
    if "memory" in only:
        memory(rows, 100_000 if quick else 1_000_000)
    width = max(len(r[1]) for r in rows)
    scenario_width = max(len(r[0]) for r in rows)
    print(
        f"\ntap-lms-unified benchmark — {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}; "
        f"sandbox latency {LATENCY_MS} ms per response in the latency and budget scenarios"
    )
    for scenario, name, value in rows:
        print(f"{scenario:<{scenario_width}}  {name:<{width}}  {value}")
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

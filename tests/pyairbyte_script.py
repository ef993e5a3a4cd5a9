"""Runs INSIDE the PyAirbyte virtualenv (see tests/test_airbyte_pyairbyte.py), not in pytest.

    python pyairbyte_script.py params.json result.json

PyAirbyte drives `source-lms-unified` (a local executable) against a running sandbox:
check, a first read, a mutation through the sandbox's admin API, a second read (which
PyAirbyte makes incremental by passing back the state kept in its cache), a forced full
refresh, a Bindbee read, and a read with a failing tenant. What happened is written to
result.json for the test to judge; the sandbox's request log of each read is included.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time
import typing as t
import urllib.request
from pathlib import Path

import airbyte as ab
import sqlalchemy as sa

NAME = "source-lms-unified"


def main() -> None:
    params = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    admin = params["admin_url"].rstrip("/") + "/"
    executable = params["executable"]
    cache_dir = params["cache_dir"]
    out: dict[str, t.Any] = {"pyairbyte_version": importlib.metadata.version("airbyte")}

    def admin_call(path: str, payload: dict | None = None) -> t.Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(admin + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=30) as response:  # the sandbox, on loopback
            return json.loads(response.read())

    def measured_read(source: t.Any, cache: t.Any, **kwargs: t.Any) -> dict[str, t.Any]:
        admin_call("requests/reset", {})
        time.sleep(0.2)  # the previous read's rows all carry an earlier extraction time
        started = time.time()
        result = source.read(cache=cache, **kwargs)
        seconds = time.time() - started
        engine = cache.get_sql_engine()
        rows, extracted = {}, {}
        with engine.connect() as connection:
            for stream in result.streams:
                table = result[stream].to_sql_table()
                rows[stream] = connection.execute(
                    sa.select(sa.func.count()).select_from(table)
                ).scalar_one()
                # rows (re)written by this read: their _airbyte_extracted_at is from it
                extracted[stream] = connection.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(table.c._airbyte_extracted_at >= sa.func.to_timestamp(started - 0.1))
                ).scalar_one()
        tracker = getattr(result, "_progress_tracker", None)
        return {
            "seconds": round(seconds, 2),
            "processed_records": result.processed_records,
            "read_counts": dict(getattr(tracker, "stream_read_counts", {}) or {}),
            "rows": rows,
            "rows_extracted_by_this_read": extracted,
            "requests": admin_call("requests")["requests"],
        }

    # Kombo: check, first read, change data, incremental read, forced full refresh
    kombo = ab.get_source(NAME, config=params["kombo"], local_executable=executable)
    kombo.check()
    kombo.select_all_streams()
    out["kombo_streams"] = kombo.get_available_streams()
    cache = ab.new_local_cache("lms_kombo", cache_dir=cache_dir + "/kombo")
    out["first"] = measured_read(kombo, cache)
    out["mutated"] = admin_call("mutate", params["mutation"])
    out["second"] = measured_read(kombo, cache)
    out["full"] = measured_read(kombo, cache, force_full_refresh=True)

    # Bindbee: full refresh streams
    bindbee = ab.get_source(NAME, config=params["bindbee"], local_executable=executable)
    bindbee.select_all_streams()
    out["bindbee"] = measured_read(
        bindbee, ab.new_local_cache("lms_bindbee", cache_dir=cache_dir + "/bindbee")
    )

    # A failing tenant must surface as an exception
    failing = ab.get_source(NAME, config=params["failing"], local_executable=executable)
    failing.select_streams(["skills"])
    try:
        failing.read(cache=ab.new_local_cache("lms_failing", cache_dir=cache_dir + "/failing"))
    except Exception as exc:  # reported to the test, with the connector's log
        log_file = getattr(exc, "log_file", None)
        log = Path(log_file).read_text(encoding="utf-8") if log_file else ""
        out["failing"] = {
            "raised": type(exc).__name__,
            "message": str(exc)[:2000],
            "traces": [line for line in log.splitlines() if '"type":"TRACE"' in line],
        }
    else:
        out["failing"] = {"raised": None}

    Path(sys.argv[2]).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main()

"""Helpers of the reliability tests: expected record sets, the real CLI, secret greps."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
import typing as t
from collections import Counter
from pathlib import Path

from tap_lms_unified.providers import PROVIDERS
from tap_lms_unified.sandbox import Sandbox
from tests.conftest import (
    BINDBEE_STREAMS,
    BINDBEE_TOKEN,
    KOMBO_STREAMS,
    KOMBO_TENANT,
    ROOT,
    CliRun,
    TapRun,
    cli_command,
    cli_env,
    primary_key,
    run_tap,
    stream_classes,
    validate_cli_output,
    write_json,
)


def key_of(stream: str) -> str:
    """A stream's primary key, whichever provider's it is (same-named streams share it)."""
    (key,) = {primary_key(p, stream) for p in PROVIDERS if stream in stream_classes(p)}
    return key


# ------------------------------------------------------------------ expected data


def expected_ids(
    sb: Sandbox, provider: str, streams: t.Iterable[str] | None = None, tenant: str | None = None
) -> dict[str, list[str]]:
    """The ids each stream must emit for one tenant: everything the sandbox holds."""
    if provider == "kombo":
        tenant = tenant or KOMBO_TENANT
        wanted = tuple(streams or KOMBO_STREAMS)
        out: dict[str, list[str]] = {}
        users = sb.records("kombo", tenant, "users")
        courses = sb.records("kombo", tenant, "courses")
        for stream in wanted:
            if stream == "users":
                out[stream] = [u["id"] for u in users]
            elif stream == "progress":
                out[stream] = [p["progress_id"] for u in users for p in u.get("progress") or ()]
            elif stream == "courses":
                out[stream] = [c["id"] for c in courses]
            elif stream == "course_revisions":
                out[stream] = [r["id"] for c in courses for r in c.get("revisions") or ()]
            else:
                out[stream] = [r["id"] for r in sb.records("kombo", tenant, stream)]
        return out
    tenant = tenant or BINDBEE_TOKEN
    wanted = tuple(streams or BINDBEE_STREAMS)
    return {s: [r["id"] for r in sb.records("bindbee", tenant, s)] for s in wanted}


def emitted_ids(messages: t.Iterable[dict], stream: str) -> list[str]:
    key = key_of(stream)
    return [
        m["record"][key]
        for m in messages
        if m.get("type") == "RECORD" and m.get("stream") == stream
    ]


def record_set_diff(messages: list[dict], expected: dict[str, list[str]]) -> dict[str, str]:
    """Per stream, what is wrong with the emitted ids (missing, unexpected, duplicated)."""
    problems = {}
    for stream, ids in expected.items():
        got = emitted_ids(messages, stream)
        missing = set(ids) - set(got)
        extra = set(got) - set(ids)
        dups = [k for k, n in Counter(got).items() if n > 1]
        if missing or extra or dups or len(got) != len(ids):
            problems[stream] = (
                f"expected {len(ids)}, got {len(got)}; missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(extra)[:3]}, duplicated {dups[:3]}"
            )
    return problems


def assert_exact_records(messages: list[dict], expected: dict[str, list[str]]) -> None:
    """Every expected record exactly once, nothing else, in every listed stream."""
    problems = record_set_diff(messages, expected)
    assert not problems, problems


# ------------------------------------------------------------------ in-process runs


def run_tap_exact(
    config: dict,
    *,
    state: dict | None = None,
    select: t.Iterable[str] | None = None,
    log_level: int = logging.INFO,
) -> TapRun:
    """`conftest.run_tap` that never raises: the error, if any, is in `.error`."""
    return run_tap(config, state=state, select=select, expect_error=True, log_level=log_level)


# ------------------------------------------------------------------ state


def bookmark_values(state: dict, stream: str) -> list[t.Any]:
    """Committed bookmarks (`replication_key_value`) of a stream, partitions included."""
    stream_state = (state.get("bookmarks") or {}).get(stream) or {}
    nodes = [stream_state, *(stream_state.get("partitions") or ())]
    return [n["replication_key_value"] for n in nodes if "replication_key_value" in n]


# ------------------------------------------------------------------ the real CLI


def run_cli_until(
    config: dict,
    tmp_path: Path,
    *,
    lines: int = 1,
    then_wait: float = 0.0,
    sig: int = signal.SIGKILL,
    state: dict | None = None,
    name: str = "run",
    timeout: float = 60,
) -> CliRun:
    """Start the CLI; once `lines` RECORD/STATE lines (0: any first line) were read from
    its stdout and `then_wait` more seconds passed, send `sig`.

    stdout is read all along by a thread (the tap never blocks on a full pipe), and
    everything the tap wrote before the signal is kept, as a target reading the pipe would
    have received it; a line cut by a SIGKILL is dropped. `killed_after` is the number of
    RECORD/STATE lines read when the signal was sent (None: the tap had finished).
    """
    config_file = write_json(tmp_path / f"{name}-config.json", config)
    state_file = None if state is None else write_json(tmp_path / f"{name}-state.json", state)
    stderr_path = tmp_path / f"{name}-stderr.txt"
    out: list[bytes] = []
    counted = [0]
    reached = threading.Event()

    def read(stream: t.IO[bytes]) -> None:
        for line in stream:
            out.append(line)
            if lines == 0:  # the first line of any kind
                reached.set()
            if line.startswith((b'{"type":"RECORD"', b'{"type":"STATE"')):
                counted[0] += 1
                if counted[0] >= lines:
                    reached.set()
        reached.set()  # end of output

    with stderr_path.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            cli_command(config_file, state_file),
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=cli_env(),
        )
        assert proc.stdout is not None
        reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
        reader.start()
        try:
            assert reached.wait(timeout), "the tap took too long to reach the kill point"
            if then_wait:
                time.sleep(then_wait)
            killed_after = None
            if proc.poll() is None:
                killed_after = counted[0]
                proc.send_signal(sig)
            proc.wait(timeout=timeout)
            reader.join(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    text = b"".join(out)
    complete = text if text.endswith(b"\n") or not text else text[: text.rfind(b"\n") + 1]
    run = CliRun(
        proc.returncode,
        complete.decode("utf-8").split("\n"),
        stderr_path.read_text(encoding="utf-8"),
        killed_after=killed_after,
    )
    validate_cli_output(run)
    return run


# ------------------------------------------------------------------ secrets


def exception_texts(error: BaseException | None) -> list[str]:
    """str() and repr() of an exception and of everything chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts += [str(error), repr(error), repr(getattr(error, "args", ()))]
        error = error.__cause__ or error.__context__
    return texts


def leaks(texts: t.Iterable[str], secrets: t.Iterable[str]) -> list[tuple[str, str]]:
    """(secret, excerpt) for each secret found in any text."""
    found = []
    for text in texts:
        for secret in secrets:
            at = text.find(secret)
            if at >= 0:
                found.append((secret, text[max(0, at - 80) : at + len(secret) + 20]))
    return found

"""The output side: every line whole, exactly once, in order, however the OS takes it."""

from __future__ import annotations

import os
import threading
import typing as t

import pytest

from tap_lms_unified.output import CHUNK, Lines

if t.TYPE_CHECKING:
    from pathlib import Path

LINES = [f"record {i} ".encode() * (i % 90 + 1) + b"\n" for i in range(7000)]  # ~4 chunks
STATE = b'{"type":"STATE"}\n'


def write_all(path: Path, *, from_thread: bool = False) -> bytes:
    """RECORD lines held by `Lines`, then a STATE that flushes them; what the file got."""
    with path.open("wb") as target:
        lines = Lines(target)

        def sync() -> None:
            for line in LINES:
                lines.add_record(line)
            lines.add(STATE, flush=True)

        if from_thread:
            worker = threading.Thread(target=sync)
            worker.start()
            worker.join(60)
        else:
            sync()
    return path.read_bytes()


def test_every_line_once_in_order(tmp_path):
    assert sum(map(len, LINES)) > 3 * CHUNK  # held lines are written out chunk by chunk
    assert write_all(tmp_path / "out") == b"".join(LINES) + STATE


def test_a_sync_in_another_thread_writes_its_lines(tmp_path):
    assert write_all(tmp_path / "out", from_thread=True) == b"".join(LINES) + STATE


@pytest.mark.parametrize("take", [61, 999, 65536])
def test_short_writes_lose_and_repeat_nothing(tmp_path, monkeypatch, take):
    """The OS may take part of what is handed to it (a slow reader and a signal): the rest
    is written next, from where it stopped, also in the middle of a line."""

    calls = [0]
    bound = (sum(map(len, LINES)) + len(STATE)) // take + 1_000  # lines are never re-sent

    def short_writev(fd: int, buffers: list[bytes]) -> int:
        calls[0] += 1
        assert calls[0] <= bound, "the same bytes are handed over again and again"
        return os.write(fd, b"".join(buffers)[:take])

    monkeypatch.setattr(os, "writev", short_writev)
    assert write_all(tmp_path / "out") == b"".join(LINES) + STATE

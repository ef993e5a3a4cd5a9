"""Output side: how messages reach stdout, as whole lines, each exactly once.

`Lines` is the byte stream both protocols write through (the Airbyte writer lives in
`airbyte/`); `SingerWriter` is the Singer side.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib.messages import Message, SingerMessageType

CHUNK = 1 << 20
#: Lines per `writev` call (the system's limit on its buffers).
IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


class Lines:
    """Messages to a stream as whole lines, buffered in 1 MiB chunks, each byte written once.

    The bytes of the buffer are removed as the operating system takes them, so a write cut
    short (a signal while the reader is slow) is resumed, never repeated. A termination
    signal that arrives while a message is handed over (`busy`) only takes effect after it:
    the handler sets `stop_after`, which the main thread raises once the message is out.
    """

    def __init__(self, stream: t.IO[t.Any] | None = None) -> None:
        self._stream = stream  # None: sys.stdout at the time of writing
        self._pending = bytearray()
        self._lock = threading.RLock()  # log lines may come from walk threads
        #: RECORD lines not yet in `_pending`, and their size: a list append is all a
        #: record costs. Only the thread that wrote them (the sync's) moves them on, in order.
        self._records: list[bytes] = []
        self._held = 0
        self._owner: int | None = None  # that thread
        #: A message is being handed over: a signal must not cut it.
        self.busy = False
        #: What to raise once the message being handed over is out (a deferred signal).
        self.stop_after: BaseException | None = None

    def add_record(self, line: bytes) -> None:
        """One whole RECORD line, from the sync's thread: written out once a chunk is full."""
        if not self._records:
            self._owner = threading.get_ident()
        self._records.append(line)  # one step: a signal finds the line held, or not yet
        self._held += len(line)
        if self._held >= CHUNK:
            self.flush()

    def add(self, data: bytes | bytearray, *, flush: bool) -> None:
        """Append one or more whole lines; write them out now if `flush` or the chunk is full."""
        if not flush and not self._records and len(self._pending) + len(data) < CHUNK:
            # The hot path (a RECORD): no system call, so nothing a signal could cut.
            with self._lock:
                self._pending += data
            return
        with self.message(), self._lock:
            if flush or len(self._pending) + self._held + len(data) >= CHUNK:
                self._flush(data)
            else:
                self._take_records()
                self._pending += data

    def flush(self) -> None:
        """Write out everything buffered: each byte once, even if a write is cut short."""
        with self.message(), self._lock:
            self._flush()

    def _take_records(self) -> None:
        """Move the held RECORD lines to the buffer, before anything their thread writes next."""
        if self._records and threading.get_ident() == self._owner:
            self._pending += b"".join(self._records)
            self._records.clear()
            self._held = 0

    @contextlib.contextmanager
    def message(self) -> t.Iterator[None]:
        """Hand one message over (possibly in several writes): a signal waits for its end.

        Only the main thread, where signal handlers run, marks itself busy: a log line that
        a walk thread writes does not hold a signal back.
        """
        if not _in_main_thread():
            yield
            return
        busy, self.busy = self.busy, True
        try:
            yield
        finally:
            self.busy = busy
        if self.stop_after is not None and not busy:
            stop, self.stop_after = self.stop_after, None
            raise stop

    def _flush(self, data: bytes | bytearray = b"") -> None:
        """Write out, in this order: the buffer, this thread's held RECORD lines, `data`."""
        target = self._stream if self._stream is not None else sys.stdout
        fd = self._fd(target) if self._records else None
        if fd is not None and threading.get_ident() == self._owner:
            self._write_pending(target)
            target.flush()  # anything written through the stream itself goes first
            self._write_records(fd)
        else:
            self._take_records()
        self._pending += data
        self._write_pending(target)
        target.flush()

    def _fd(self, target: t.IO[t.Any]) -> int | None:
        """The file descriptor under `target`, if there is one."""
        buffer = getattr(target, "buffer", None) if self._stream is None else target
        try:
            return int(buffer.fileno())  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):  # none: in memory (tests)
            return None

    def _write_records(self, fd: int) -> None:
        """The held RECORD lines, straight from their list (no copy), each byte once."""
        records = self._records
        while records:
            batch = records[:IOV_MAX]
            written = os.writev(fd, batch)
            if written == sum(map(len, batch)):
                del records[: len(batch)]
                continue
            taken = 0  # a short write: what the OS took goes, the rest waits its turn
            while written >= len(records[taken]):
                written -= len(records[taken])
                taken += 1
            del records[:taken]
            records[0] = records[0][written:]
        self._held = 0

    def _write_pending(self, target: t.IO[t.Any]) -> None:
        if not self._pending:
            return
        buffer = getattr(target, "buffer", None) if self._stream is None else target
        if buffer is None:  # a text stream without bytes underneath (tests' io.StringIO)
            target.write(self._pending.decode())
            self._pending.clear()
            return
        target.flush()  # anything written through the stream itself goes first
        fd = self._fd(target)
        if fd is None:
            buffer.write(self._pending)
            self._pending.clear()
            return
        written = 0
        view = memoryview(self._pending)
        try:
            while written < len(view):
                written += os.write(fd, view[written:])
        finally:
            view.release()
            del self._pending[:written]  # what the OS took is never written again


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class SingerWriter(MsgSpecWriter):
    """The SDK's msgspec writer, writing RECORDs in 1 MiB chunks instead of one by one.

    Each write to stdout is a system call that also hands the GIL to the walk threads; a
    write (and flush) per record cost more than the rest of writing it. Nothing is lost:
    every other message (STATE, SCHEMA, ACTIVATE_VERSION) is written and flushed together
    with all records before it, and a killed run resumes from the last STATE received.
    Whole lines, each once, whatever signal arrives: see `Lines`.
    """

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = Lines()

    def write_message(self, message: Message) -> None:
        data = self.format_message(message)
        self.lines.add(data, flush=message.type != SingerMessageType.RECORD)

    def write_record_line(self, line: bytes) -> None:
        """A RECORD message already serialised as the SDK would, newline included.

        Main thread only, as every message the SDK writes.
        """
        self.lines.add_record(line)

    def flush(self) -> None:
        """Write out everything buffered."""
        self.lines.flush()

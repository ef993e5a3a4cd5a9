"""Output side: how Singer messages reach stdout (the Airbyte writer lives beside it)."""

from __future__ import annotations

import os
import sys
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib.messages import Message, SingerMessageType


class SingerWriter(MsgSpecWriter):
    """The SDK's msgspec writer, writing RECORDs in 1 MiB chunks instead of one by one.

    Each write to stdout is a system call that also hands the GIL to the walk threads; a
    write (and flush) per record cost more than the rest of writing it. Nothing is lost:
    every other message (STATE, SCHEMA, ACTIVATE_VERSION) is written and flushed together
    with all records before it, and a killed run resumes from the last STATE received.

    Whole lines, each once, whatever signal arrives: the bytes of the buffer are removed as
    the operating system takes them, so a write cut short is resumed, never repeated; and
    a termination signal that arrives while a message is handed over (`busy`) only takes
    effect after it (`stop_after`, raised by `write_message`; see the tap's handler).
    """

    CHUNK = 1 << 20

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = bytearray()
        #: A message is being formatted or written: a signal must not cut it.
        self.busy = False
        #: What to raise once the message being handed over is out (a deferred signal).
        self.stop_after: BaseException | None = None

    def write_message(self, message: Message) -> None:
        busy, self.busy = self.busy, True
        try:
            self._pending += self.format_message(message)
            if message.type != SingerMessageType.RECORD or len(self._pending) >= self.CHUNK:
                self.flush()
        finally:
            self.busy = busy
        if self.stop_after is not None and not busy:
            stop, self.stop_after = self.stop_after, None
            raise stop

    def flush(self) -> None:
        """Write out everything buffered: each byte once, even if a write is cut short."""
        busy, self.busy = self.busy, True
        try:
            if self._pending:
                self._write_pending()
            sys.stdout.flush()
        finally:
            self.busy = busy

    def _write_pending(self) -> None:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text stream without bytes underneath (tests' io.StringIO)
            sys.stdout.write(self._pending.decode())
            self._pending.clear()
            return
        sys.stdout.flush()  # anything written through sys.stdout goes first
        try:
            fd = sys.stdout.fileno()
        except (OSError, ValueError):  # no file descriptor (an in-memory stream)
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

"""Output side: how Singer messages reach stdout (the Airbyte writer lives beside it)."""

from __future__ import annotations

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
    """

    CHUNK = 1 << 20

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending = bytearray()

    def write_message(self, message: Message) -> None:
        self._pending += self.format_message(message)
        if message.type != SingerMessageType.RECORD or len(self._pending) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write out everything buffered."""
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is not None:
            buffer.write(self._pending)
        else:  # a text stream without bytes underneath (tests' io.StringIO)
            sys.stdout.write(self._pending.decode())
        self._pending.clear()
        sys.stdout.flush()

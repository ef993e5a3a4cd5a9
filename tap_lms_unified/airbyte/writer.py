"""Output side of the adapter: Singer messages in, Airbyte messages out.

`AirbyteWriter` is a message writer of the SDK (`Tap(message_writer=...)`): the tap syncs
exactly as it does for Singer, and every message it writes is translated here.

- SCHEMA (a stream starts): TRACE STREAM_STATUS STARTED, after COMPLETE (or INCOMPLETE)
  of the previous stream; its first RECORD: STREAM_STATUS RUNNING.
- RECORD: RECORD {stream, data, emitted_at (ms)}.
- STATE (the whole tap state): one STATE `type: STREAM` per configured stream whose
  bookmarks changed or that had records since its last STATE; stream_state is the tap's
  per-tenant bookmark structure of that stream, sourceStats.recordCount the records since.
- ACTIVATE_VERSION, BATCH: nothing. Airbyte replaces full-refresh data itself.

Log records become LOG messages on the same stdout, written under one lock (the tap logs
from its walk threads too).
"""

from __future__ import annotations

import datetime
import decimal
import logging
import threading
import traceback
import typing as t
from collections import Counter

import msgspec
from singer_sdk.io_base import GenericSingerWriter
from singer_sdk.singerlib.messages import Message, SingerMessageType

from tap_lms_unified.airbyte import messages as ab
from tap_lms_unified.output import Lines

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tap_lms_unified.airbyte.messages import StreamState


def _enc_hook(value: t.Any) -> t.Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    return str(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)


class Output:
    """Airbyte messages to stdout: one JSON line each, through the tap's `Lines`.

    Records are buffered in 1 MiB chunks; every other message is written at once. Lines
    stay whole and are written once, whatever signal arrives (see `output.Lines`).
    """

    def __init__(
        self, stream: t.BinaryIO | None = None, redact: Callable[[str], str] | None = None
    ) -> None:
        self.lines = Lines(stream)
        self._lock = threading.Lock()
        #: Replaces secrets in every text written out (the run's `Redactor`).
        self.redact: Callable[[str], str] = redact or (lambda text: text)
        self.counts: Counter[str] = Counter()

    def write(self, message: dict[str, t.Any], *, buffered: bool = False) -> None:
        with self._lock:
            self.counts[message["type"]] += 1
        self.lines.add(_ENCODER.encode(message) + b"\n", flush=not buffered)

    def flush(self) -> None:
        self.lines.flush()

    def text(self, value: str) -> str:
        return self.redact(value)


class LogHandler(logging.Handler):
    """Log records as Airbyte LOG messages (secrets redacted)."""

    def __init__(self, output: Output) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = ab.LOG_LEVELS.get(record.levelno // 10 * 10, "INFO")
            text = record.getMessage()
            if record.name and not record.name.startswith("tap-lms-unified"):
                text = f"{record.name}: {text}"
            stack = None
            if record.exc_info and record.exc_info[0] is not None:
                stack = "".join(traceback.format_exception(*record.exc_info))
            self.output.write(
                ab.log_message(
                    level, self.output.text(text), self.output.text(stack) if stack else None
                )
            )
        except Exception:  # logging must never raise
            self.handleError(record)


class AirbyteWriter(GenericSingerWriter[bytes, Message]):
    """Translates the tap's Singer messages into Airbyte messages (see the module doc)."""

    def __init__(
        self,
        output: Output | None = None,
        *,
        streams: Iterable[str] = (),
        failing: Callable[[], bool] = lambda: False,
        initial_states: t.Mapping[str, StreamState] | None = None,
    ) -> None:
        self.output = output or Output()
        #: The tap's signal handler finds the byte stream here, as on the Singer writer.
        self.lines = self.output.lines
        #: The configured streams: only their state is sent.
        self.streams = set(streams)
        #: Whether some tenant has failed so far: the streams from then on are incomplete.
        self.failing = failing
        self.current: str | None = None
        self.statuses: dict[str, str] = {}
        self.records: Counter[str] = Counter()  # per stream, whole run
        self._since_state: Counter[str] = Counter()  # per stream, since its last STATE
        # What Airbyte already holds (the incoming state) is not echoed back.
        self._stream_states: dict[str, StreamState] = dict(initial_states or {})
        self._sent_state = {k: _ENCODER.encode(v) for k, v in self._stream_states.items()}

    # -- GenericSingerWriter --------------------------------------------------------------

    def serialize_message(self, message: Message) -> bytes:
        return _ENCODER.encode(message.to_dict())

    def write_message(self, message: Message) -> None:
        # One Singer message may become several Airbyte messages (a status, a record):
        # a termination signal waits until all of them are out, and the counts match.
        with self.lines.message():
            kind = message.type
            if kind == SingerMessageType.RECORD:
                self._record(t.cast("t.Any", message))
            elif kind == SingerMessageType.STATE:
                self._state(t.cast("t.Any", message).value)
            elif kind == SingerMessageType.SCHEMA:
                self._start(t.cast("t.Any", message).stream)
            # ACTIVATE_VERSION and BATCH have no Airbyte counterpart.

    # -- translation ----------------------------------------------------------------------

    def _start(self, stream: str) -> None:
        if stream == self.current:
            return
        self.end_stream()
        self.current = stream
        self._status(stream, ab.STARTED)

    def _record(self, message: t.Any) -> None:
        stream = message.stream
        if stream != self.current:
            self._start(stream)
        if self.statuses.get(stream) == ab.STARTED:
            self._status(stream, ab.RUNNING)
        extracted = message.time_extracted
        emitted_at = int(extracted.timestamp() * 1000) if extracted else ab.now_ms()
        self.records[stream] += 1
        self._since_state[stream] += 1
        self.output.write(ab.record_message(stream, message.record, emitted_at), buffered=True)

    def _state(self, value: t.Mapping[str, t.Any]) -> None:
        bookmarks = value.get("bookmarks") or {}
        for stream in sorted(self.streams):
            stream_state = bookmarks.get(stream)
            if isinstance(stream_state, dict):
                self._stream_states[stream] = stream_state
            self._send_state(stream, only_if_changed=True)

    def _send_state(self, stream: str, *, only_if_changed: bool) -> None:
        stream_state = self._stream_states.get(stream)
        if only_if_changed and stream_state is None:
            return  # nothing known about this stream yet
        encoded = _ENCODER.encode(stream_state or {})
        unchanged = self._sent_state.get(stream) == encoded
        if only_if_changed and unchanged and not self._since_state[stream]:
            return
        self.output.write(
            ab.stream_state_message(stream, stream_state or {}, self._since_state[stream])
        )
        self._sent_state[stream] = encoded
        self._since_state[stream] = 0

    def _status(self, stream: str, status: str) -> None:
        self.statuses[stream] = status
        self.output.write(ab.stream_status(stream, status))

    def end_stream(self, *, complete: bool | None = None) -> None:
        """End the current stream: its last STATE, then COMPLETE or INCOMPLETE."""
        stream = self.current
        if stream is None:
            return
        self.current = None
        if complete is None:
            complete = not self.failing()
        if stream in self.streams and (stream not in self._sent_state or self._since_state[stream]):
            self._send_state(stream, only_if_changed=False)
        self._status(stream, ab.COMPLETE if complete else ab.INCOMPLETE)

    def finish(self, *, complete: bool) -> None:
        """End of the run: end the current stream and flush everything out."""
        self.end_stream(complete=complete and not self.failing())
        self.output.flush()


class NullWriter(GenericSingerWriter[bytes, Message]):
    """Writes nothing: the output of `check`'s trial syncs goes nowhere."""

    def serialize_message(self, message: Message) -> bytes:
        return b""

    def write_message(self, message: Message) -> None:
        return None

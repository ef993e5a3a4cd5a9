"""Every use of a private singer-sdk name, in one place, each with its reason.

`tests/test_layout.py` lists them (SDK_PRIVATE), checks that the installed SDK still has
them and pins the source of the SDK loop `SdkStream._sync_records` mirrors; the package's
other modules use none. Each use exists because no public hook does the same:

- `_sync_records`: the per-record loop (no public hook writes a RECORD). On the plain path
  (every property selected, no stream map, the Singer writer) its per-record steps are
  done here in one place; any other run takes the SDK's own loop.
- `_get_state_partition_context`, `_write_starting_replication_value`,
  `_increment_stream_state`, `_finalize_state`, `_write_state_message`: the SDK's own steps
  around the records, called by that loop as the SDK's loop calls them.
- `_stream_version` and `_write_activate_version_message`: a full-table stream stamps its
  records with the run's table version and writes ACTIVATE_VERSION after the last tenant
  (the SDK would write it before the first record: a tenant failing later would lose rows).
- `_LOG_REQUEST_METRICS`: the SDK's switch for request metrics, honoured by the tap's own.
- `StreamStateManager` (a private module), `_state_manager` and `_tap_state`: state
  partitions found through an index; the SDK scans every partition for each lookup,
  which is quadratic in tenants.
- `Tap._handle_termination`: the SDK's signal handler, replaced (tap.py says why).
"""

from __future__ import annotations

import time
import typing as t
from datetime import UTC, datetime
from functools import cached_property

from singer_sdk import RESTStream, Stream, metrics
from singer_sdk.contrib.msgspec import encoder as singer_encoder
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.catalog import REPLICATION_INCREMENTAL
from singer_sdk.streams._state import StreamStateManager

from tap_lms_unified.output import SingerWriter

if t.TYPE_CHECKING:
    from collections.abc import Generator, Mapping

    import requests
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context


def _key(context: Mapping[str, t.Any]) -> t.Hashable:
    try:
        return tuple(sorted(context.items()))
    except TypeError:  # unhashable values: their text
        return repr(sorted(context.items()))


class IndexedStateManager(StreamStateManager):
    """The SDK's state manager, finding a partition through an index instead of a scan."""

    _index: dict[t.Hashable, dict[str, t.Any]]
    _indexed: list[dict[str, t.Any]] | None = None

    def get_context_state(self, context: Context | None) -> dict[str, t.Any]:
        partition_context = self.get_state_partition_context(context)
        if not partition_context:
            return self.stream_state
        partitions = self.stream_state.setdefault("partitions", [])
        index = self._index_of(partitions)
        found = index.get(_key(partition_context))
        if found is None:  # as the SDK creates one
            found = {"context": dict(partition_context)}
            partitions.append(found)
            index[_key(partition_context)] = found
        return found

    def find(self, context: Mapping[str, t.Any]) -> Mapping[str, t.Any]:
        """A partition's state as it is, without creating it (a new partition would be in
        the next STATE message before that stream's sync has begun)."""
        entry = (self.tap_state.get("bookmarks") or {}).get(self.stream_name) or {}
        partitions = entry.get("partitions")
        if not partitions:
            return {}
        return self._index_of(partitions).get(_key(context)) or {}

    def _index_of(self, partitions: list[dict[str, t.Any]]) -> dict[t.Hashable, dict[str, t.Any]]:
        """The index of these partitions, rebuilt when the list is not the one indexed."""
        if partitions is not self._indexed or len(partitions) != len(self._index):
            index: dict[t.Hashable, dict[str, t.Any]] = {}
            for partition in partitions:
                key = _key(partition.get("context") or {})
                if key in index:
                    msg = f"State file contains duplicate entries for partition: {key}."
                    raise ValueError(msg)
                index[key] = partition
            self._index, self._indexed = index, partitions
        return self._index


class SdkStream(RESTStream[t.Any]):
    """The private SDK names a stream uses, behind public names of the tap's own."""

    #: The tap (the SDK's own reference to it is private).
    owner: Tap

    @property
    def state_manager(self) -> IndexedStateManager:
        # The SDK's property, creating the indexed manager instead of its own.
        if not isinstance(self._state_manager, IndexedStateManager):
            self._state_manager = IndexedStateManager(
                tap_name=self.tap_name,
                stream_name=self.name,
                tap_state=self._tap_state,
                state_partitioning_keys=self.state_partitioning_keys,
                is_sorted=self.is_sorted,
                check_sorted=self.check_sorted,
            )
        return self._state_manager

    def stamp_version(self, version: int) -> None:
        """RECORDs of this sync carry the run's table version."""
        self._stream_version = version

    def activate_version(self, version: int) -> None:
        """The SDK's writer of ACTIVATE_VERSION (it applies stream maps' aliases)."""
        self._write_activate_version_message(version)

    def log_request(self, response: requests.Response, tags: dict[str, t.Any]) -> None:
        """The SDK's `http_request_duration` metric, which its own request loop would log."""
        if not self._LOG_REQUEST_METRICS:
            return
        point = metrics.Point(
            "timer",
            metric=metrics.Metric.HTTP_REQUEST_DURATION,
            value=response.elapsed.total_seconds(),
            tags=tags,
        )
        metrics.log(self.metrics_logger, point)

    # -- the SDK's per-record loop on the plain path ------------------------------------

    @cached_property
    def _plain_writer(self) -> tuple[SingerWriter, bytes] | None:
        """(writer, RECORD line prefix) when a RECORD can be written without the SDK's passes.

        The SDK pops deselected properties, conforms types and applies stream maps to
        every record: with every property selected, conformance off (the tap shapes
        records itself) and no stream map or flattening, all three leave the record
        unchanged. Otherwise (None) every record takes the SDK's own path.
        """
        writer = self.owner.message_writer
        maps = self.stream_maps
        if (
            isinstance(writer, SingerWriter)
            and self.TYPE_CONFORMANCE_LEVEL == TypeConformanceLevel.NONE
            and all(self.mask.values())
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled
        ):
            alias = singer_encoder.encode(maps[0].stream_alias)
            return writer, b'{"type":"RECORD","stream":' + alias + b',"record":'
        return None

    def _sync_records(
        self, context: Context | None = None, *, write_messages: bool = True
    ) -> Generator[dict[str, t.Any], t.Any, t.Any]:
        # Pinned in tests/test_layout.py (SDK_LOOP): the SDK's loop, step by step.
        plain = self._plain_writer
        if (
            plain is None
            or not write_messages
            or context is not None  # the SDK passes one for child streams only
            or self.child_streams
            or not self.selected
            or self.ABORT_AT_RECORD_COUNT is not None  # `--test`: the SDK's own limit
            or self.is_sorted
        ):
            yield from super()._sync_records(context, write_messages=write_messages)
            return
        writer, prefix = plain
        add, encode = writer.lines.add_record, singer_encoder.encode
        key, every = self.replication_key, self.STATE_MSG_FREQUENCY
        incremental = self.replication_method == REPLICATION_INCREMENTAL
        counter, timer = self.get_record_counter(), self.get_sync_timer()
        # The SDK's post_process returns the record as it is: called only when overridden.
        post: t.Any = self.post_process
        if getattr(post, "__func__", None) is Stream.post_process:
            post = None
        written = 0
        with counter, timer:
            for partition in self.partitions or [{}]:
                counter.with_context(partition)
                timer.with_context(partition)
                current = partition or None
                state_partition = self._get_state_partition_context(current)
                self._write_starting_replication_value(current)
                high = None  # the greatest bookmark value handed to the SDK so far
                manager = self.state_manager
                uncounted = 0  # records not yet added to the counter (added in hundreds)
                partition_keys = tuple((state_partition or {}).items())
                try:
                    for row in self.get_records(current):
                        record = row if post is None else post(row, current)
                        if record is None:
                            continue
                        for field, value in partition_keys:  # as the SDK adds them
                            if field not in record:
                                record[field] = value
                        version, until, suffix = self._record_suffix
                        if version != self._stream_version or time.monotonic() >= until:
                            version, until, suffix = self._record_suffix = self.record_suffix()
                        # The line the SDK's writer would write: only the record is encoded.
                        add(b"".join((prefix, encode(record), suffix)))
                        manager.is_flushed = False
                        if incremental:
                            # Unsorted streams keep the greatest value seen: a record that
                            # cannot raise it leaves the state as it is (the SDK's would too;
                            # for a null it would only log a warning, each time).
                            bookmark = record.get(key) if key else None
                            if bookmark is None:
                                self.null_bookmarks += 1
                            elif type(bookmark) is not str or high is None or bookmark > high:
                                self._increment_stream_state(record, context=current)
                                if type(bookmark) is str:
                                    high = bookmark
                        written += 1
                        if written % every == 0:
                            self._write_state_message()
                        uncounted += 1
                        if uncounted == 100:
                            counter.increment(uncounted)
                            uncounted = 0
                        yield record
                finally:
                    counter.increment(uncounted)
                if current == state_partition:
                    self._finalize_state(self.get_context_state(current))
        self._finalize_state(self.stream_state)
        self._write_state_message()
        if self.null_bookmarks:
            self.logger.warning(
                "Stream %s: %d records without %s: their changes are not seen by an "
                "incremental run, only by a full-table one.",
                self.name,
                self.null_bookmarks,
                key,
            )

    #: Records of this sync without a bookmark value (the SDK warns about each).
    null_bookmarks = 0
    #: (table version, monotonic time until which it is current, bytes) of RECORD lines.
    _record_suffix: tuple[int | None, float, bytes] = (None, 0.0, b"")
    #: How long one `time_extracted` stamps RECORDs (the SDK stamps each with its own).
    STAMP_SECONDS = 0.01

    def record_suffix(self) -> tuple[int | None, float, bytes]:
        """The end of a RECORD line after its record: version, time_extracted, newline."""
        version = self._stream_version
        suffix = b"" if version is None else b',"version":' + singer_encoder.encode(version)
        stamp = singer_encoder.encode(datetime.now(UTC))  # what the SDK stamps
        suffix += b',"time_extracted":' + stamp + b"}\n"
        return version, time.monotonic() + self.STAMP_SECONDS, suffix


class SdkTap:
    """The private SDK names the tap uses (a mixin of the Tap class)."""

    def _handle_termination(self, signum: int, frame: t.Any) -> None:
        # The SDK's signal handler (registered for SIGTERM/SIGINT): replaced by the tap's.
        self.on_termination(signum)

    def on_termination(self, signum: int) -> None:
        raise NotImplementedError

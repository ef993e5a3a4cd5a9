"""Walking endpoints: prefetching walks in worker threads, and spools for paired streams.

Latency hiding: walk endpoints in worker threads while the main thread emits records.

The SDK syncs a stream's partitions (our tenants) one after the other in the main thread,
which is also where every Singer message is written. Workers walk the endpoint of each
tenant ahead of that — up to `max_concurrency` walks at once, each under its tenant's own
rate budget — and append the raw page bodies to a temporary file per walk. The main
thread reads them back in order. Memory stays at a few pages whatever the data size; the
Singer output (order of records per stream and tenant, STATE after the records it covers,
one SCHEMA per stream) is exactly that of a sequential run.
"""

from __future__ import annotations

import tempfile
import threading
import typing as t

import msgspec

_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    Walk = Callable[[], Iterable[bytes]]


class Cancelled(Exception):
    """The reader went away: the walk stops."""


class PageBuffer:
    """Pages of one walk: written by a worker, read once, in order, by the main thread."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="tap-lms-unified-pages-")  # noqa: SIM115 (shared by two threads)
        self._cond = threading.Condition()
        self._written = 0
        self._done = False
        self._cancelled = False
        self._error: BaseException | None = None

    def put(self, page: bytes) -> None:
        with self._cond:
            if self._cancelled:
                raise Cancelled
            self._file.seek(self._written)
            self._file.write(len(page).to_bytes(8, "big"))
            self._file.write(page)
            self._written += 8 + len(page)
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify_all()

    def pages(self) -> Iterator[bytes]:
        """Every page, as soon as it is written; the walk's error, if any, at its place."""
        position = 0
        try:
            while True:
                with self._cond:
                    while position >= self._written and not self._done:
                        self._cond.wait()
                    if position >= self._written:
                        if self._error is not None:
                            raise self._error
                        return
                    self._file.seek(position)
                    size = int.from_bytes(self._file.read(8), "big")
                    page = self._file.read(size)
                    position += 8 + size
                yield page
        finally:
            self.close()

    def close(self) -> None:
        with self._cond:
            self._cancelled = True
            if not self._file.closed:
                self._file.close()


class Prefetcher:
    """Runs walks in daemon threads, at most `max_concurrency` at a time."""

    def __init__(self, max_concurrency: int) -> None:
        self._slots = threading.BoundedSemaphore(max(1, max_concurrency))
        self._buffers: dict[tuple[str, str], PageBuffer] = {}

    def start(
        self, stream: str, walks: Iterable[tuple[str, Callable[[], Iterable[bytes]]]]
    ) -> None:
        """Start one walk per (tenant, pages function) of a stream."""
        for tenant, walk in walks:
            buffer = PageBuffer()
            self._buffers[stream, tenant] = buffer
            # Daemon threads: an interrupted run must not wait for walks nobody will read.
            threading.Thread(
                target=self._run,
                args=(walk, buffer),
                name=f"walk-{stream}-{tenant}",
                daemon=True,
            ).start()

    def pages(self, stream: str, tenant: str) -> Iterator[bytes]:
        return self._buffers.pop((stream, tenant)).pages()

    def close(self) -> None:
        """Stop every walk nobody will read (the run ended or failed)."""
        for buffer in self._buffers.values():
            buffer.close()
        self._buffers.clear()

    def _run(self, walk: Walk, buffer: PageBuffer) -> None:
        with self._slots:
            try:
                for page in walk():
                    buffer.put(page)
            except Cancelled:
                buffer.finish()
            except BaseException as exc:  # handed to the reader, which decides
                buffer.finish(exc)
            else:
                buffer.finish()


class Spool:
    """Rows written to an anonymous temporary file and read back once.

    Paired streams (users+progress, say) share one walk: the
    stream synced first spools its partner's rows here, and the partner reads them back.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="tap-lms-unified-", buffering=1 << 20)  # noqa: SIM115

    def write(self, rows: Iterable[dict[str, t.Any]]) -> None:
        for row in rows:
            self._file.write(_ENCODE.encode(row) + b"\n")

    def read(self) -> Iterator[dict[str, t.Any]]:
        try:
            self._file.seek(0)
            for line in self._file:
                yield _DECODE.decode(line)
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()

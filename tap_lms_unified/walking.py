"""Walking endpoints: prefetching walks in worker threads, and spools for paired streams.

Latency hiding: every walk of the run fetches its pages from the start of the run.

The SDK syncs streams, and a stream's partitions (our tenants), one after the other in the
main thread, which is also where every Singer message is written. Worker threads walk the
endpoints of every selected stream for every tenant ahead of that — up to
`max_concurrency` walks at once, each tenant under its own rate budget — and append the
raw page bodies to a temporary file per walk. The main thread reads them back in the order
the Singer output needs, so the output (records per stream and tenant in API order, STATE
after the records it covers, one SCHEMA per stream) is exactly that of a sequential run.

Scheduling keeps that cheap and safe:

- A free slot goes to the waiting walk that the reader needs first, so the walk being read
  is always running (or done) and never waits behind walks read later.
- A tenant's first walk is its probe: its other walks start once the probe's first page
  has arrived. A tenant whose credentials are refused costs one request, not one per
  stream.
- A walk that fails ends its tenant at that walk in a sequential run, so the tenant's
  walks read after it are cancelled at once; the reader cancels the rest when it fails
  the tenant.
- Memory stays flat: pages the reader has not taken wait in memory up to a budget shared
  by all walks of the run (`MEMORY`), then on disk. A walk more than `max_backlog`
  bytes ahead of its reader pauses, and gives its slot to another walk, until the reader
  has caught up by half of that; disk use is bounded as well.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import os
import tempfile
import threading
import typing as t
from dataclasses import dataclass

import msgspec

_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator

    Walk = Callable[[], Iterable[bytes]]

#: How far (bytes of raw pages) a walk may run ahead of its reader.
MAX_BACKLOG = 64 << 20
#: Bytes of raw pages waiting in memory, all walks together; more wait on disk. A page the
#: reader takes from memory costs no write and read of a file.
MEMORY = 16 << 20


class MemoryBudget:
    """Bytes of pages that may wait in memory, shared by the walks of a run."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if size > self._free:
                return False
            self._free -= size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._free += size


class Cancelled(Exception):
    """The reader went away: the walk stops."""


class PageBuffer:
    """Pages of one walk: written by a worker, read once, in order, by the main thread."""

    def __init__(self, memory: MemoryBudget | None = None) -> None:
        self._file = tempfile.TemporaryFile(prefix="tap-lms-unified-pages-", buffering=0)  # noqa: SIM115 (shared by two threads)
        self._fd = self._file.fileno()
        self._cond = threading.Condition()
        self._memory = memory or MemoryBudget(0)
        #: Pages in memory: all of them come before the unread ones on disk (a page is
        #: kept in memory only when none waits on disk).
        self._held: collections.deque[bytes] = collections.deque()
        self._held_bytes = 0
        self._written = 0  # in the file
        self._read = 0  # from the file
        self._done = False
        self._cancelled = False
        self._error: BaseException | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def backlog(self) -> int:
        """Bytes written and not yet read."""
        return self._held_bytes + self._written - self._read

    def put(self, page: bytes) -> None:
        with self._cond:  # the file is only closed under this lock, never mid-write
            if self._cancelled:
                raise Cancelled
            if self._read == self._written and self._memory.take(len(page)):
                self._held.append(page)
                self._held_bytes += len(page)
            else:
                os.pwrite(self._fd, len(page).to_bytes(8, "big") + page, self._written)
                self._written += 8 + len(page)
            self._cond.notify_all()

    def wait_for_reader(self, backlog: int) -> None:
        """Block until at most `backlog` bytes are unread; Cancelled if the reader left."""
        with self._cond:
            while self.backlog > backlog and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise Cancelled

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify_all()

    def pages(self) -> Generator[bytes, None, None]:
        """Every page, as soon as it is written; the walk's error, if any, at its place."""
        try:
            while True:
                with self._cond:
                    while not self._held and self._read >= self._written and not self._done:
                        self._cond.wait()
                    if self._held:
                        page = self._held.popleft()
                        self._held_bytes -= len(page)
                        self._memory.give(len(page))
                    elif self._read < self._written:
                        size = int.from_bytes(os.pread(self._fd, 8, self._read), "big")
                        page = os.pread(self._fd, size, self._read + 8)
                        self._read += 8 + size
                    else:
                        if self._error is not None:
                            raise self._error
                        return
                    self._cond.notify_all()  # a paused walk may go on
                yield page
        finally:
            self.close()

    def close(self) -> None:
        with self._cond:
            self._cancelled = True
            if not self._file.closed:
                self._file.close()
            self._memory.give(self._held_bytes)
            self._held.clear()
            self._held_bytes = 0
            self._cond.notify_all()


@dataclass(eq=False)
class _Walk:
    order: int  # position in the reading order
    stream: str
    tenant: str
    pages: Walk
    buffer: PageBuffer
    probe: bool  # the tenant's first walk: the others wait for its first page


class Prefetcher:
    """Runs walks in daemon threads, at most `max_concurrency` fetching at a time."""

    def __init__(
        self, max_concurrency: int, max_backlog: int = MAX_BACKLOG, memory: int = MEMORY
    ) -> None:
        self._limit = max(1, max_concurrency)
        self.max_backlog = max_backlog
        self.memory = MemoryBudget(memory)
        self._cond = threading.Condition()
        self._busy = 0
        self._waiting: list[int] = []  # orders of walks waiting for a slot (a heap)
        self._walks: dict[tuple[str, str], _Walk] = {}
        self._open: set[str] = set()  # tenants whose probe has answered
        self._probed: set[str] = set()
        self._orders = 0

    def start(self, walks: Iterable[tuple[str, str, Walk]]) -> None:
        """Start walks of (stream, tenant, pages function), given in their reading order."""
        added = []
        with self._cond:  # all registered before any runs: a failing probe cancels them
            for stream, tenant, pages in walks:
                probe = tenant not in self._probed
                self._probed.add(tenant)
                walk = _Walk(self._orders, stream, tenant, pages, PageBuffer(self.memory), probe)
                self._orders += 1
                self._walks[stream, tenant] = walk
                added.append(walk)
        for walk in added:
            # Daemon threads: an interrupted run must not wait for walks nobody will read.
            threading.Thread(
                target=self._run,
                args=(walk,),
                name=f"walk-{walk.stream}-{walk.tenant}",
                daemon=True,
            ).start()

    def has(self, stream: str, tenant: str) -> bool:
        return (stream, tenant) in self._walks

    def pages(self, stream: str, tenant: str) -> Generator[bytes, None, None]:
        return self._walks.pop((stream, tenant)).buffer.pages()

    def cancel_tenant(self, tenant: str) -> None:
        """Stop every walk of a tenant that will not be read (it failed)."""
        self._cancel(lambda walk: walk.tenant == tenant)

    def close(self) -> None:
        """Stop every walk nobody will read (the run ended or failed)."""
        self._cancel(lambda _walk: True)

    def _cancel(self, which: Callable[[_Walk], bool]) -> None:
        with self._cond:
            walks = [key for key, walk in self._walks.items() if which(walk)]
            for key in walks:
                self._walks.pop(key).buffer.close()
            self._cond.notify_all()

    # -- worker side ----------------------------------------------------------------------

    def _acquire(self, walk: _Walk) -> None:
        """Wait for a slot: free ones go to the waiting walk read first."""
        with self._cond:
            heapq.heappush(self._waiting, walk.order)
            try:
                while True:
                    if walk.buffer.cancelled:
                        raise Cancelled
                    if self._busy < self._limit and self._waiting[0] == walk.order:
                        break
                    self._cond.wait()
            finally:
                self._waiting.remove(walk.order)
                heapq.heapify(self._waiting)
                self._cond.notify_all()
            self._busy += 1

    def _release(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def _wait_for_probe(self, walk: _Walk) -> None:
        with self._cond:
            while walk.tenant not in self._open and not walk.buffer.cancelled:
                self._cond.wait()
            if walk.buffer.cancelled:
                raise Cancelled

    def _opened(self, walk: _Walk) -> None:
        if walk.probe:
            with self._cond:
                self._open.add(walk.tenant)
                self._cond.notify_all()

    def _run(self, walk: _Walk) -> None:
        buffer, holding = walk.buffer, False
        try:
            if not walk.probe:
                self._wait_for_probe(walk)
            self._acquire(walk)
            holding = True
            with contextlib.closing(iter(walk.pages())) as pages:  # type: ignore[type-var]
                for page in pages:
                    if buffer.backlog > self.max_backlog:
                        holding = False
                        self._release()  # paused: another walk may fetch meanwhile
                        buffer.wait_for_reader(self.max_backlog // 2)
                        self._acquire(walk)
                        holding = True
                    buffer.put(page)
                    self._opened(walk)
        except Cancelled:
            buffer.finish()
        except BaseException as exc:  # handed to the reader, which decides
            buffer.finish(exc)
            # The reader ends this tenant here at the latest: its later walks are never read.
            self._cancel(lambda w: w.tenant == walk.tenant and w.order > walk.order)
        else:
            buffer.finish()
        finally:
            if holding:
                self._release()
            self._opened(walk)


class Spool:
    """Rows written to an anonymous temporary file and read back once.

    Paired streams (users+progress, say) share one walk: the
    stream synced first spools its partner's rows here, and the partner reads them back.
    """

    #: Rows per line of the file: a JSON list each (one encoder call per line).
    BATCH = 500

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="tap-lms-unified-", buffering=1 << 20)  # noqa: SIM115
        self._batch: list[dict[str, t.Any]] = []

    def write(self, rows: Iterable[dict[str, t.Any]]) -> None:
        """Rows, in order: held until a line's worth (`BATCH`) is there."""
        self._batch += rows
        if len(self._batch) >= self.BATCH:
            self._write_batch()

    def _write_batch(self) -> None:
        if self._batch:
            self._file.write(_ENCODE.encode(self._batch) + b"\n")
            self._batch.clear()

    def read(self) -> Iterator[dict[str, t.Any]]:
        try:
            self._write_batch()
            self._file.seek(0)
            for line in self._file:
                yield from _DECODE.decode(line)
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()

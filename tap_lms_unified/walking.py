"""Walking endpoints: a fixed pool of workers fetching every walk of a run, ahead of the reader.

Latency hiding: every walk of the run (each selected stream for each tenant) fetches its
pages from the start of the run, while the main thread writes the records of the walk in
front. The SDK syncs streams, and a stream's partitions (our tenants), one after the
other in the main thread, which is also where every Singer message is written; the pages
wait in a buffer per walk (`PageBuffer`) until it reads them, in the order the output
needs. So the output is exactly that of a sequential run.

The pool (`Pool`) is `max_concurrency` threads, whatever the number of walks. Its work is a
priority queue of tasks, each one request: the next page of a cursor walk (one at a time:
the cursor comes with the page), or one page of an offset walk (several at a time: the
offsets are known in advance). A task costs O(log n) to queue and wakes one worker.

- A free worker takes the task that the reader needs first: the walk being read is always
  fetching (or done), and never waits behind walks read later.
- A tenant's first walk is its probe: its other walks start once the probe's first page has
  arrived. A tenant whose credentials are refused costs one request, not one per stream.
- A walk that fails ends its tenant at that walk in a sequential run, so the tenant's walks
  read after it are cancelled at once; the reader cancels the rest when it fails the tenant.
- Memory stays flat: pages the reader has not taken wait in memory up to a budget shared by
  all walks of the run (`MEMORY`), then on disk. A walk more than `max_backlog` bytes ahead
  of its reader pauses until the reader has caught up by half of that: disk use is bounded.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import tempfile
import threading
import typing as t

import msgspec

from tap_lms_unified.errors import WalkEndedEarly

_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator

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
    """Pages of one walk: written by workers, read once, in order, by the main thread."""

    def __init__(self, memory: MemoryBudget | None = None) -> None:
        self._file: t.Any = None  # a temporary file, once a page has to wait on disk
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
        #: Called (by the reader, no lock held) once the backlog is at most `resume_at`.
        self.on_drain: Callable[[], None] | None = None
        self.resume_at = 0

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
                if self._file is None:
                    self._file = tempfile.TemporaryFile(  # noqa: SIM115 (closed in close())
                        prefix="tap-lms-unified-pages-", buffering=0
                    )
                os.pwrite(self._file.fileno(), len(page).to_bytes(8, "big") + page, self._written)
                self._written += 8 + len(page)
            self._cond.notify()

    def pause(self, resume: Callable[[], None], resume_at: int) -> bool:
        """Call `resume` once the backlog is at most `resume_at`; False if it already is."""
        with self._cond:
            if self.backlog <= resume_at or self._cancelled:
                return False
            self.on_drain, self.resume_at = resume, resume_at
            return True

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify()

    def pages(self) -> Generator[bytes, None, None]:
        """Every page, as soon as it is written; the walk's error, if any, at its place."""
        try:
            while True:
                drained = None
                with self._cond:
                    while not self._held and self._read >= self._written and not self._done:
                        self._cond.wait()
                    if self._held:
                        page = self._held.popleft()
                        self._held_bytes -= len(page)
                        self._memory.give(len(page))
                    elif self._read < self._written:
                        fd = self._file.fileno()
                        size = int.from_bytes(os.pread(fd, 8, self._read), "big")
                        page = os.pread(fd, size, self._read + 8)
                        self._read += 8 + size
                    else:
                        if self._error is not None:
                            raise self._error
                        return
                    if self.on_drain is not None and self.backlog <= self.resume_at:
                        drained, self.on_drain = self.on_drain, None
                if drained is not None:
                    drained()  # a paused walk goes on
                yield page
        finally:
            self.close()

    def close(self) -> None:
        with self._cond:
            self._cancelled = True
            if self._file is not None:
                self._file.close()
                self._file = None
            self._memory.give(self._held_bytes)
            self._held.clear()
            self._held_bytes = 0
            self._cond.notify_all()


class Walk:
    """One endpoint walked for one tenant, as the pool runs it: one request per task."""

    def __init__(self, stream: str, tenant: str) -> None:
        self.stream, self.tenant = stream, tenant
        self.order = 0  # position in the reading order (set by the pool)
        self.probe = False  # the tenant's first walk: the others wait for its first page
        self.buffer = PageBuffer()
        self.lock = threading.Lock()
        #: Called once the walk is over (by the worker that ended it).
        self.on_finish: Callable[[], None] | None = None

    def first(self) -> Iterable[int]:
        """The tasks (page numbers) to queue when the walk starts."""
        return (0,)

    def run(self, page: int, pool: Pool) -> None:
        """Do one task: fetch a page, hand it to the buffer, queue what follows."""
        raise NotImplementedError


class CursorWalk(Walk):
    """Pages one after the other: `pages()` yields each raw page (retries and all)."""

    def __init__(self, stream: str, tenant: str, pages: Callable[[], Iterator[bytes]]) -> None:
        super().__init__(stream, tenant)
        self._pages = pages
        self._iterator: Iterator[bytes] | None = None

    def run(self, page: int, pool: Pool) -> None:
        try:
            if self._iterator is None:
                self._iterator = iter(self._pages())
            content = next(self._iterator)
        except StopIteration:
            pool.finish(self)
            return
        except BaseException as exc:  # handed to the reader, which decides
            pool.finish(self, exc)
            return
        try:
            self.buffer.put(content)
        except Cancelled:
            return
        pool.opened(self)
        pool.next(self, page + 1)


class OffsetWalk(Walk):
    """Pages at known offsets, several in flight, handed to the buffer in order.

    `fetch(n)` returns page `n` (offset n * limit). The walk ends at the first page shorter
    than `limit`; nothing past it is handed on. A page that repeats an id of this walk (an
    integration ignoring `offset`) is not handed on, and one longer than `limit` (ignoring
    `limit`) is the last: either ends the walk early, with `WalkEndedEarly` for the reader.
    """

    def __init__(
        self,
        stream: str,
        tenant: str,
        *,
        fetch: Callable[[int], bytes],
        ids: Callable[[bytes], list[t.Any]],
        limit: int,
        width: int,
        endpoint: str,
    ) -> None:
        super().__init__(stream, tenant)
        self._fetch, self._ids = fetch, ids
        self.limit, self.width, self.endpoint = limit, max(1, width), endpoint
        self._results: dict[int, bytes | BaseException] = {}
        self._delivered = 0  # the next page to hand on
        self._issued = 1  # pages queued so far (the first is queued at the start)
        self._ended = False
        self._seen: set[t.Any] = set()
        self._pool: Pool | None = None

    def run(self, page: int, pool: Pool) -> None:
        self._pool = pool
        if self._ended or self.buffer.cancelled:
            return
        try:
            result: bytes | BaseException = self._fetch(page)
        except BaseException as exc:
            result = exc
        with self.lock:
            if self._ended:
                return
            self._results[page] = result
            while not self._ended and self._delivered in self._results:
                self._deliver(self._results.pop(self._delivered), pool)
            if not self._ended:
                self.queue_more(pool)

    def _deliver(self, result: bytes | BaseException, pool: Pool) -> None:
        number = self._delivered + 1
        self._delivered += 1
        if isinstance(result, BaseException):
            self._end(pool, result)
            return
        try:
            ids = self._ids(result)
        except Exception as exc:  # not the envelope: the page's own error says it
            self._end(pool, exc)
            return
        repeated = [i for i in ids if i is not None and i in self._seen]
        if repeated:
            why = (
                f"{self.endpoint}: page {number} (offset {(number - 1) * self.limit}) repeats "
                f"{len(repeated)} record(s) of earlier pages (the integration seems to ignore "
                "'offset'): the walk stops here"
            )
            self._end(pool, WalkEndedEarly(why))
            return
        self._seen.update(ids)
        try:
            self.buffer.put(result)
        except Cancelled:
            self._ended = True
            return
        pool.opened(self)
        if len(ids) > self.limit:
            why = (
                f"{self.endpoint}: page {number} holds {len(ids)} records, more than the limit "
                f"of {self.limit} (the integration seems to ignore 'limit'): the walk stops here"
            )
            self._end(pool, WalkEndedEarly(why))
        elif len(ids) < self.limit:
            self._end(pool, None)

    def _end(self, pool: Pool, error: BaseException | None) -> None:
        self._ended = True
        self._results.clear()
        pool.finish(self, error)

    def queue_more(self, pool: Pool) -> None:
        """Queue pages while fewer than `width` are ahead of the last one handed on.

        One page at a time until the first has come back full: a walk of one page costs
        one request, not `width`.
        """
        width = self.width if self._delivered else 1
        if pool.paused(self, self.resume):
            return
        while self._issued < self._delivered + width:
            pool.next(self, self._issued)
            self._issued += 1

    def resume(self) -> None:
        """The reader has caught up: queue the next pages."""
        with self.lock:
            if not self._ended and self._pool is not None:
                self.queue_more(self._pool)


class Pool:
    """Runs walks with `workers` threads, at most that many requests in flight at a time."""

    def __init__(self, workers: int, max_backlog: int = MAX_BACKLOG, memory: int = MEMORY) -> None:
        self.workers = max(1, workers)
        self.max_backlog = max_backlog
        self.memory = MemoryBudget(memory)
        self._cond = threading.Condition()
        self._tasks: list[tuple[int, int, int, Walk]] = []  # (order, page, sequence, walk)
        self._sequence = itertools.count()
        self._walks: dict[tuple[str, str], Walk] = {}
        self._by_tenant: dict[str, list[Walk]] = {}
        self._waiting: dict[str, list[Walk]] = {}  # walks waiting for their tenant's probe
        self._open: set[str] = set()  # tenants whose probe has answered
        self._orders = itertools.count()
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- the reader's side ----------------------------------------------------------------

    def start(self, walks: Iterable[Walk]) -> None:
        """Start walks, given in their reading order."""
        with self._cond:
            for walk in walks:
                walk.order = next(self._orders)
                walk.buffer = PageBuffer(self.memory)
                self._walks[walk.stream, walk.tenant] = walk
                siblings = self._by_tenant.setdefault(walk.tenant, [])
                walk.probe = not siblings
                siblings.append(walk)
                if walk.probe or walk.tenant in self._open:
                    self._queue(walk, walk.first())
                else:
                    self._waiting.setdefault(walk.tenant, []).append(walk)
            self._spawn()

    def has(self, stream: str, tenant: str) -> bool:
        return (stream, tenant) in self._walks

    def pages(self, stream: str, tenant: str) -> Generator[bytes, None, None]:
        return self._walks.pop((stream, tenant)).buffer.pages()

    def cancel_tenant(self, tenant: str, after: int = -1) -> None:
        """Stop the walks of a tenant (read after `after`) that will not be read."""
        with self._cond:
            walks = [w for w in self._by_tenant.get(tenant, ()) if w.order > after]
            for walk in walks:
                self._walks.pop((walk.stream, walk.tenant), None)
            waiting = self._waiting.get(tenant, [])
            waiting[:] = [w for w in waiting if w.order <= after]
        for walk in walks:
            walk.buffer.close()

    def close(self) -> None:
        """Stop every walk nobody will read (the run ended or failed), and the workers."""
        with self._cond:
            self._closed = True
            walks = list(self._walks.values())
            self._walks.clear()
            self._waiting.clear()
            self._tasks.clear()
            self._cond.notify_all()
        for walk in walks:
            walk.buffer.close()

    # -- the walks' side -----------------------------------------------------------------

    def next(self, walk: Walk, page: int) -> None:
        """Queue page `page` of a walk, or, if it is too far ahead of its reader, once the
        reader has caught up."""
        if isinstance(walk, OffsetWalk):
            with self._cond:
                self._queue(walk, (page,))
            return

        def resume() -> None:
            with self._cond:
                self._queue(walk, (page,))

        if not self.paused(walk, resume):
            resume()

    def paused(self, walk: Walk, resume: Callable[[], None]) -> bool:
        """Whether the walk is too far ahead of its reader; then `resume` is called once the
        reader has caught up by half."""
        if walk.buffer.backlog <= self.max_backlog:
            return False
        return walk.buffer.pause(resume, self.max_backlog // 2)

    def opened(self, walk: Walk) -> None:
        """The walk's first page arrived: its tenant's other walks may start."""
        if walk.probe:
            with self._cond:
                self._open.add(walk.tenant)
                for waiting in self._waiting.pop(walk.tenant, ()):
                    self._queue(waiting, waiting.first())

    def finish(self, walk: Walk, error: BaseException | None = None) -> None:
        """The walk is over: its reader gets its error (if any) at its place."""
        if error is not None and not isinstance(error, WalkEndedEarly | Cancelled):
            # The reader ends this tenant here at the latest: its later walks are never read
            # (cancelled before they may start, so that a refused probe costs one request).
            self.cancel_tenant(walk.tenant, after=walk.order)
        walk.buffer.finish(error)
        self.opened(walk)
        if walk.on_finish is not None:
            walk.on_finish()

    def _queue(self, walk: Walk, pages: Iterable[int]) -> None:
        """Under the lock: queue tasks, waking one worker each."""
        if self._closed or walk.buffer.cancelled:
            return
        for page in pages:
            heapq.heappush(self._tasks, (walk.order, page, next(self._sequence), walk))
            self._cond.notify()

    def _spawn(self) -> None:
        """Under the lock: the workers, started once (daemon threads: an interrupted run
        must not wait for walks nobody will read)."""
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"walk-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._tasks and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                _, page, _, walk = heapq.heappop(self._tasks)
            if not walk.buffer.cancelled:
                walk.run(page, self)


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

"""Feeding written bytes, in order, to blocking work in a worker thread.

FUSE `write` handlers run on the trio loop and must return fast; staging
(`pwrite`, which blocks for milliseconds once the kernel throttles dirty
pages), hashing and archive parsing must not run there. A `Pipeline` queues each
write's bytes and, once a batch has accumulated, drains the queue in one
`trio.to_thread.run_sync` call under a shared limiter — one thread hop per
batch, not per 1 MiB write (a hop costs more than the write itself when the
data is in the page cache). Memory is bounded: past `max_queued` bytes the
writer waits until the worker has taken a batch (backpressure) — not until
the queue is empty, which stopped the writer and the worker in turn (`cp` of
1 GiB into .import/ took 2.15 s that way, 2.0 s now). An error raised by the
consumer is kept and re-raised by the next `push` or `drain`, so `cp` stops
early and its `close()` reports the reason.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import trio

BATCH = 4 << 20
MAX_QUEUED = 8 << 20


class Pipeline:
    """Ordered, batched, bounded hand-off of bytes to `consume` in a worker thread."""

    def __init__(
        self,
        consume: Callable[[int, bytes], None],
        limiter: trio.CapacityLimiter,
        *,
        batch: int | None = None,
        max_queued: int | None = None,
    ) -> None:
        self._consume = consume
        self._limiter = limiter
        self._batch = BATCH if batch is None else batch
        self._max = MAX_QUEUED if max_queued is None else max_queued
        self._queue: deque[tuple[int, bytes]] = deque()
        self._queued = 0
        self._mutex = threading.Lock()
        self._running = False
        self._idle = trio.Event()
        self._idle.set()
        self._space = trio.Event()  # set each time the worker has taken a batch
        self.error: BaseException | None = None

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    async def push(self, offset: int, data: bytes) -> None:
        """Queue bytes written at `offset`; waits only when `max_queued` bytes are waiting."""
        self._raise()
        with self._mutex:
            self._queue.append((offset, data))
            self._queued += len(data)
            queued = self._queued
        if queued >= self._batch:
            self._start()
        while queued >= self._max and self._running:
            if self._space.is_set():
                self._space = trio.Event()
            await self._space.wait()
            self._raise()
            queued = self._queued

    async def drain(self) -> None:
        """Wait until everything pushed so far was consumed; re-raise its error."""
        if self._queue:
            self._start()
        await self._idle.wait()
        self._raise()

    def _start(self) -> None:
        if self._running:
            return
        self._running = True
        self._idle = trio.Event()
        trio.lowlevel.spawn_system_task(self._run)

    async def _run(self) -> None:
        try:
            while self._queue and self.error is None:
                await trio.to_thread.run_sync(self._consume_batch, limiter=self._limiter)
                self._space.set()
        finally:
            self._running = False
            self._idle.set()
            self._space.set()

    def _consume_batch(self) -> None:
        """Worker thread: consume queued chunks until `batch` bytes or the queue is empty."""
        taken = 0
        while taken < self._batch:
            with self._mutex:
                if not self._queue:
                    return
                offset, data = self._queue.popleft()
                self._queued -= len(data)
            taken += len(data)
            try:
                self._consume(offset, data)
            except Exception as exc:  # kept for the writer; the trio loop must not see it
                self.error = exc
                with self._mutex:
                    self._queue.clear()
                    self._queued = 0
                return

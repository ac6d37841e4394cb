"""Cut pyfuse3's fixed cost per request: cheaper waiting for the next request.

A walk or a read-all is thousands of small request/reply round trips, each
paid in full by one client waiting on us (BASELINES.md §2c: ~30-60 µs per
request, most of it not ocifs's code). Profiling a `find` showed the daemon's
time going to pyfuse3's wait between requests: a `trio.Lock` round trip
(two schedule points), an `epoll_ctl` + `epoll_wait` per request, and the
wake-up of a halted vCPU when the client's next request arrives.

pyfuse3 looks both up through its module global `trio` at run time
(`_wait_fuse_readable` in pyfuse3's internal.pxi), so we give it a `trio`
whose `Lock` takes a free lock without a schedule point and whose
`lowlevel.wait_readable` first asks `poll()` whether a request is already
there and, if not, keeps asking for a few microseconds (busy poll) before
sleeping in trio's epoll. On this project's 2-vCPU VM that made `find` of
a 6,768-entry layer 1.9x faster and reading every file of it 1.4x faster,
with *less* daemon CPU (docs/bench.md). Busy polling is skipped on a single
CPU, where it would only delay the client.

Bulk writes into `.import/` are the exception: the kernel queues them without
waiting for each reply, and spinning (which mostly holds the GIL) slowed the
worker thread that hashes and stores them, so `quiet()` — called on every
write — turns the busy poll off for the next `QUIET_S` seconds.

Fairness: every `FAIR_EVERY`-th wait goes through trio's real
`wait_readable`, so other tasks (timers, invalidations, worker-thread
completions) run at least that often under a stream of requests.
If pyfuse3's internals ever look different, nothing is changed.

A withdrawn request must not freeze the daemon. pyfuse3 reads the FUSE fd
(`fuse_session_receive_buf`) holding the GIL, trusting that the fd was
readable. But the kernel takes a request back off the queue when its client
gets a fatal signal before we read it (a `cp` or `dd` killed mid-import), so
the read that follows can block, GIL held, until some other request comes.
With writes of that client still waiting on worker threads (which need the
GIL) before they can be answered, none ever does: a deadlock that left the
killed writer unkillable in `fuse_flush`. So the fd is made non-blocking: such
a read fails with EAGAIN, which pyfuse3 raises as BlockingIOError out of its
session loop, and `_session_loop` below starts that loop again. (pyfuse3 then
leaves its ~1 MiB receive buffer behind: once per withdrawn request.)
"""

from __future__ import annotations

import logging
import os
import select
import time
import types
from typing import Any

import pyfuse3
import trio

log = logging.getLogger(__name__)

#: default busy poll before sleeping, in microseconds (when more than one CPU)
DEFAULT_SPIN_US = 50
#: every this many waits, one goes through trio's scheduler
FAIR_EVERY = 32
#: no busy poll for this long after a write request
QUIET_S = 0.1

_waiter: _Waiter | None = None


class _ReadLock:
    """pyfuse3's read lock, taken without yielding when free and never handed over.

    trio's `Lock` is fair: `release()` makes the first parked task the owner.
    pyfuse3 keeps a spare task parked on this lock, so with a fair lock every
    request cost a park, an unpark and a pass through trio's scheduler (the two
    tasks took turns; a third of a `find`'s daemon time). Here a release only
    wakes a waiter to retry: the task that just served a request takes the lock
    again at once, and the spare runs (and parks again) only when the loop
    yields anyway. Any task may read the next request, so nobody starves of
    anything: the lock only keeps a single task waiting on the FUSE fd.
    """

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        while self._held:
            await self._lot.park()
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self._held = False
        if self._lot:
            self._lot.unpark()


class _Waiter:
    """`wait_readable` for pyfuse3's one FUSE fd (pyfuse3 lets one task wait at a time)."""

    def __init__(self, spin_s: float) -> None:
        self._spin_s = spin_s
        self._poller = select.poll()
        self._registered: set[int] = set()
        self._count = 0
        self.spin_after = 0.0  # perf_counter() before which not to spin

    async def wait_readable(self, fd: Any) -> None:
        fileno = fd if isinstance(fd, int) else fd.fileno()
        if fileno not in self._registered:
            os.set_blocking(fileno, False)  # see the module docstring: withdrawn requests
            self._poller.register(fileno, select.POLLIN)
            self._registered.add(fileno)
        self._count += 1
        if self._count % FAIR_EVERY:
            poll = self._poller.poll
            if poll(0):
                return
            if self._spin_s and (now := time.perf_counter()) >= self.spin_after:
                end = now + self._spin_s
                while time.perf_counter() < end:
                    if poll(0):
                        return
        await trio.lowlevel.wait_readable(fd)


class _TrioFacade(types.ModuleType):
    """`trio` as pyfuse3 sees it: ours where listed, the real module elsewhere."""

    def __init__(self, lowlevel: types.ModuleType) -> None:
        super().__init__("trio")
        self.lowlevel = lowlevel
        self.Lock = _ReadLock

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


class _LowlevelFacade(types.ModuleType):
    def __init__(self, waiter: _Waiter) -> None:
        super().__init__("trio.lowlevel")
        self.wait_readable = waiter.wait_readable

    def __getattr__(self, name: str) -> Any:
        return getattr(trio.lowlevel, name)


def default_spin_us() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return DEFAULT_SPIN_US if cpus > 1 else 0


def install(spin_us: int) -> bool:
    """Give pyfuse3 the cheaper waits; False (and no change) if its internals differ."""
    namespace = pyfuse3.__dict__
    if (
        namespace.get("trio") is not trio
        or "_wait_fuse_readable" not in namespace
        or not callable(namespace.get("_session_loop"))
    ):
        log.warning("pyfuse3 %s: unexpected internals; using its standard request loop",
                    getattr(pyfuse3, "__version__", "?"))
        return False
    global _waiter
    _waiter = _Waiter(spin_us / 1e6)
    namespace["trio"] = _TrioFacade(_LowlevelFacade(_waiter))
    if not isinstance(namespace["_session_loop"], _RestartingLoop):
        namespace["_session_loop"] = _RestartingLoop(namespace["_session_loop"])
    log.debug("request loop: cheap read lock, busy poll %d µs", spin_us)
    return True


def quiet() -> None:
    """A bulk write is under way: no busy poll for the next `QUIET_S` seconds."""
    if _waiter is not None:
        _waiter.spin_after = time.perf_counter() + QUIET_S


def uninstall() -> None:
    """Back to the real trio (tests that run several mounts in one process)."""
    global _waiter
    _waiter = None
    namespace = pyfuse3.__dict__
    if isinstance(namespace.get("trio"), _TrioFacade):
        namespace["trio"] = trio
    loop = namespace.get("_session_loop")
    if isinstance(loop, _RestartingLoop):
        namespace["_session_loop"] = loop.original


class _RestartingLoop:
    """pyfuse3's `_session_loop`, started again when a read found no request.

    pyfuse3 looks `_session_loop` up in its module globals both when `main()`
    starts it and when a loop starts another one, so every worker goes
    through this. A read of the non-blocking FUSE fd that finds the request
    withdrawn raises BlockingIOError (EAGAIN) out of the loop; the loop has
    not counted itself out yet (`task_count`), so running it again is exact.
    """

    def __init__(self, original: Any) -> None:
        self.original = original

    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        while True:
            try:
                await self.original(*args, **kwargs)
            except BlockingIOError:
                log.debug("a FUSE request was withdrawn before it was read; reading on")
                continue
            return

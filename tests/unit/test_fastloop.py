"""fastloop: pyfuse3's `trio` is replaced only when its internals look as expected."""

from __future__ import annotations

import errno
import os

import pyfuse3
import pytest
import trio
import trio.testing

from ocifs import fastloop


def test_install_and_uninstall_swap_pyfuse3s_trio() -> None:
    assert fastloop.install(0)
    try:
        facade = pyfuse3.__dict__["trio"]
        assert facade is not trio
        assert facade.ClosedResourceError is trio.ClosedResourceError  # the rest is trio's
        assert facade.lowlevel.current_task is trio.lowlevel.current_task
    finally:
        fastloop.uninstall()
    assert pyfuse3.__dict__["trio"] is trio


def test_unexpected_internals_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(pyfuse3.__dict__, "_wait_fuse_readable")
    assert not fastloop.install(50)
    assert pyfuse3.__dict__["trio"] is trio


def test_the_read_lock_still_excludes() -> None:
    order: list[str] = []

    async def main() -> None:
        lock = fastloop._ReadLock()

        async def holder(name: str) -> None:
            async with lock:
                order.append(f"{name} in")
                await trio.sleep(0.01)
                order.append(f"{name} out")

        async with trio.open_nursery() as n:
            n.start_soon(holder, "a")
            n.start_soon(holder, "b")

    trio.run(main)
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_the_read_lock_is_not_handed_to_a_parked_task() -> None:
    """The releasing task takes the lock again without a schedule point; the woken
    waiter retries later and still gets it (pyfuse3's spare reader task)."""
    order: list[str] = []

    async def main() -> None:
        lock = fastloop._ReadLock()

        async def spare() -> None:
            async with lock:
                order.append("spare")

        async with trio.open_nursery() as n:
            async with lock:
                n.start_soon(spare)
                await trio.testing.wait_all_tasks_blocked()  # the spare is parked
            async with lock:  # no checkpoint in between: the spare cannot have run
                order.append("server")
            await trio.testing.wait_all_tasks_blocked()
        order.append("done")

    trio.run(main)
    assert order == ["server", "spare", "done"]


def test_a_cancelled_waiter_leaves_the_read_lock_usable() -> None:
    async def main() -> None:
        lock = fastloop._ReadLock()
        async with trio.open_nursery() as n, lock:

            async def waiter() -> None:
                async with lock:
                    raise AssertionError("a cancelled waiter got the lock")

            n.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            n.cancel_scope.cancel()
        with trio.fail_after(1):
            async with lock:
                pass

    trio.run(main)


def test_quiet_pauses_the_busy_poll_for_a_while() -> None:
    import time

    assert fastloop.install(50)
    try:
        waiter = fastloop._waiter
        assert waiter is not None and waiter.spin_after == 0.0
        fastloop.quiet()
        assert time.perf_counter() < waiter.spin_after <= time.perf_counter() + fastloop.QUIET_S
    finally:
        fastloop.uninstall()
    fastloop.quiet()  # harmless when not installed


def test_a_withdrawn_request_restarts_the_session_loop_and_the_fd_is_non_blocking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pyfuse3 reads the FUSE fd holding the GIL: a request withdrawn between
    poll and read must give EAGAIN (non-blocking fd), and the BlockingIOError
    pyfuse3 raises for it must start its loop again, not end the mount. (The
    deadlock this prevents is what `tests/mount/test_import.py`'s killed-writer
    test ran into.)"""
    runs: list[int] = []

    async def session_loop(*args: object) -> None:
        runs.append(len(args))
        if len(runs) < 3:
            raise OSError(errno.EAGAIN, "fuse_session_receive_buf failed")  # BlockingIOError

    monkeypatch.setitem(pyfuse3.__dict__, "_session_loop", session_loop)
    assert fastloop.install(0)
    try:
        loop = pyfuse3.__dict__["_session_loop"]
        trio.run(loop, "nursery", 1, 99)
        assert runs == [3, 3, 3]  # twice withdrawn, then the loop ended normally

        async def fails() -> None:
            raise OSError(errno.EIO, "fuse_session_receive_buf failed")

        with pytest.raises(OSError) as err:
            trio.run(type(loop)(fails))
        assert err.value.errno == errno.EIO  # any other error still ends the loop

        r, w = os.pipe()
        try:
            trio.run(_wait_readable_once, r, w)
            assert not os.get_blocking(r)
        finally:
            os.close(r)
            os.close(w)
    finally:
        fastloop.uninstall()
    assert pyfuse3.__dict__["_session_loop"] is session_loop


async def _wait_readable_once(r: int, w: int) -> None:
    os.write(w, b"x")
    await pyfuse3.__dict__["trio"].lowlevel.wait_readable(r)

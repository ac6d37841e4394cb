"""fastloop: pyfuse3's `trio` is replaced only when its internals look as expected."""

from __future__ import annotations

import pyfuse3
import pytest
import trio

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


def test_the_free_lock_still_excludes() -> None:
    order: list[str] = []

    async def main() -> None:
        lock = fastloop._FreeLock()

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

"""importer.pipeline: ordered, bounded hand-off of written bytes to a worker thread."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from ocifs.importer.pipeline import Pipeline

MIB = 1 << 20


def test_bytes_arrive_in_order_and_memory_stays_bounded() -> None:
    seen: list[int] = []
    high = [0]

    async def main() -> None:
        p: Pipeline

        def consume(offset: int, data: bytes) -> None:
            seen.append(offset)
            high[0] = max(high[0], p._queued)

        p = Pipeline(consume, trio.CapacityLimiter(1), batch=2 * MIB, max_queued=4 * MIB)
        for i in range(64):
            await p.push(i * MIB, b"x" * MIB)
            assert p._queued <= 4 * MIB
        await p.drain()

    trio.run(main)
    assert seen == [i * MIB for i in range(64)]
    assert high[0] <= 4 * MIB


def test_a_blocked_writer_resumes_after_one_batch_not_a_full_drain() -> None:
    gate = threading.Event()
    consumed: list[int] = []
    queued_when_resumed: list[int] = []

    async def main() -> None:
        def consume(offset: int, data: bytes) -> None:
            if offset == 0:
                gate.wait(10)
            elif offset >= 2 * MIB:
                time.sleep(0.2)  # the later batches are slow: the queue is not empty soon
            consumed.append(offset)

        p = Pipeline(consume, trio.CapacityLimiter(1), batch=2 * MIB, max_queued=4 * MIB)
        for i in range(5):  # the queue fills at chunk 3 or 4, while chunk 0 is held
            if i == 3:
                trio.lowlevel.current_trio_token().run_sync_soon(gate.set)
            await p.push(i * MIB, b"x" * MIB)
        queued_when_resumed.append(p._queued)
        await p.drain()

    trio.run(main)
    assert consumed == [i * MIB for i in range(5)]
    assert queued_when_resumed[0] >= 2 * MIB, "the writer waited for the queue to empty"


def test_a_consumer_error_reaches_the_writer() -> None:
    async def main() -> None:
        def consume(offset: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        p = Pipeline(consume, trio.CapacityLimiter(1), batch=MIB, max_queued=2 * MIB)
        with pytest.raises(OSError, match="No space"):
            for i in range(16):
                await p.push(i * MIB, b"x" * MIB)
            await p.drain()

    trio.run(main)

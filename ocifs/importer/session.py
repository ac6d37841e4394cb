"""What every ingest of one mount shares: limiters, status, pending entries, commits.

All commits go through `Session.commit`, so the order is the same everywhere:
blobs (fsync, rename, fsync dir), then index.json under the layout lock, then
`on_change` on the trio thread, then a re-check of pending entries that were
waiting on a blob that just arrived. Blocking steps run in worker threads; the
session's state is touched only on the trio thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ocifs.errors import NotDurable, OcifsError
from ocifs.importer import closure, indexjson
from ocifs.importer.commit import commit_blobs
from ocifs.importer.pending import Batch, Pending, PendingEntry
from ocifs.importer.staging import StagedFile
from ocifs.importer.status import StatusLog
from ocifs.model.digest import Digest

if TYPE_CHECKING:
    from ocifs.importer.ingest import Ingest

log = logging.getLogger(__name__)


@dataclass
class Session:
    layout: str
    on_change: Callable[[], None]
    lock_timeout: float = 30.0
    #: how long a refs/<name> import waits for blobs other open ingests may bring
    ref_wait: float = 30.0
    pending: Pending = field(default_factory=Pending)
    status: StatusLog = field(init=False)
    cpu: trio.CapacityLimiter = field(init=False)
    io: trio.CapacityLimiter = field(init=False)
    #: open ingests (with at least one writer); ref imports wait only if others exist
    active: set[Ingest] = field(default_factory=set)
    changed: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.status = StatusLog(self.pending.lines)
        self.cpu = trio.CapacityLimiter(2)
        self.io = trio.CapacityLimiter(4)

    def poke(self) -> None:
        """Wake ref imports waiting for blobs (something was committed or closed)."""
        self.changed.set()
        self.changed = trio.Event()

    async def commit(
        self,
        blobs: Sequence[tuple[Digest, StagedFile]],
        entries: Sequence[dict[str, Any]] = (),
    ) -> list[Digest]:
        """Commit verified blobs, then merge complete entries; returns the new digests."""

        def work() -> tuple[list[Digest], bool]:
            new = commit_blobs(self.layout, blobs)
            return new, indexjson.update(
                self.layout, entries, self.lock_timeout, check_present=True
            )

        try:
            new, rewritten = await trio.to_thread.run_sync(work, limiter=self.io)
        except NotDurable:
            self.on_change()  # index.json did change: show it
            self.poke()
            raise
        except BaseException:
            self.poke()
            raise
        if new or rewritten:
            self.on_change()
        self.poke()
        await self.settle(set(new) | {d for d, _ in blobs})
        return new

    async def settle(self, arrived: set[Digest]) -> None:
        """Merge pending entries whose closure `arrived` may have completed."""
        candidates = self.pending.waiting_on(arrived)
        if not candidates:
            return

        def work() -> tuple[dict[PendingEntry, set[Digest] | str], bool]:
            view = closure.BlobView(self.layout)
            results: dict[PendingEntry, set[Digest] | str] = {}
            for p in candidates:
                try:
                    results[p] = closure.missing(view, p.desc)
                except OcifsError as exc:
                    results[p] = str(exc)
            ready = [p.entry for p, r in results.items() if r == set()]
            rewritten = indexjson.update(
                self.layout, ready, self.lock_timeout, check_present=True
            )
            return results, rewritten

        try:
            results, rewritten = await trio.to_thread.run_sync(work, limiter=self.io)
        except (OcifsError, OSError) as exc:
            log.warning("pending index entries not merged yet: %s", exc)
            return
        done: list[PendingEntry] = []
        for p, result in results.items():
            if isinstance(result, str):
                p.batch.failures.append(f"{p.label()}: {result}")
                done.append(p)
            elif not result:
                p.batch.merged += 1
                done.append(p)
            else:
                p.missing = result
        self.pending.remove(done)
        if rewritten:
            self.on_change()
        for batch in {p.batch for p in done}:
            if not self.pending.unfinished(batch):
                self.finish_batch(batch)
        self.status.on_change()  # .pending changed

    def finish_batch(self, batch: Batch) -> None:
        """The one `.status` line of an index.json import whose entries had to wait."""
        merged = f"{batch.merged} entr{'y' if batch.merged == 1 else 'ies'} merged"
        if batch.failures:
            self.status.record("FAILED", batch.source, f"{merged}; " + "; ".join(batch.failures))
        else:
            later = " (the last once their blobs arrived)" if batch.waited else ""
            self.status.record("OK", batch.source, merged + later)

    def abandon_pending(self) -> None:
        for p in self.pending.items:
            log.warning("import abandoned at unmount: %s: %s", p.source, p.describe())
        self.pending.items.clear()

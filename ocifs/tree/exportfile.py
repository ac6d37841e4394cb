"""`image.tar`: a virtual archive served from its segment table (see `ocifs.export`).

A read at any offset bisects the table once and then walks the few segments it
spans: header bytes come from memory, member bodies from the blobs through the
same `BlobAccess` that serves `blobs/`, so they are size-checked at open and
verified as read exactly like the raw blob files (a blob that fails makes the
read that reaches its end fail with EIO, never a wrong archive).

Reads of one archive are served one at a time, in arrival order. A read that
spans a small blob's end awaits its verification; had another read (the
kernel's read-ahead) run meanwhile, a large blob would have seen its bytes out
of order, and sequential verification would silently not happen.
"""

from __future__ import annotations

import stat

import trio

from ocifs.errors import BlobUnavailable
from ocifs.export import ExportLayout
from ocifs.tree.attr import Attr
from ocifs.tree.blobs import BlobAccess
from ocifs.tree.nodes import MOUNT_TIME_NS, Node


class ExportFile(Node):
    """The archive of one image or index; `broken` says why it cannot be read at all."""

    __slots__ = ("_lock", "access", "broken", "layout")

    def __init__(
        self,
        inode: int,
        access: BlobAccess,
        layout: ExportLayout | None,
        broken: str | None = None,
    ) -> None:
        super().__init__(inode)
        self.access = access
        self.layout = layout
        self.broken = broken
        self._lock = trio.Lock()  # FIFO: see the module docstring

    def attr(self) -> Attr:
        size = self.layout.size if self.layout is not None else 0
        return Attr(inode=self.inode, mode=stat.S_IFREG | 0o444, size=size, mtime_ns=MOUNT_TIME_NS)

    def check_open(self) -> None:
        if self.layout is None:
            raise BlobUnavailable(self.broken or "image.tar: unavailable")

    async def read(self, offset: int, size: int) -> bytes:
        layout = self.layout
        if layout is None:
            raise BlobUnavailable(self.broken or "image.tar: unavailable")
        # Uncontended (the usual case): take the lock without trio's schedule point, so
        # a read costs no more trips through the scheduler than a read of blobs/.
        # acquire_nowait never jumps the queue: it fails while anyone is waiting.
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            return await self._read(layout, offset, size)
        finally:
            self._lock.release()

    async def _read(self, layout: ExportLayout, offset: int, size: int) -> bytes:
        end = min(layout.size, offset + size)
        if offset >= end:
            return b""
        segments = layout.segments
        i = layout.locate(offset)
        parts: list[bytes] = []
        pos = offset
        while pos < end:
            seg = segments[i]
            lo = pos - seg.start
            n = min(seg.length - lo, end - pos)
            if seg.data is not None:
                parts.append(seg.data[lo : lo + n])
            else:
                body = seg.body
                assert body is not None
                data = await self.access.read(body.digest, body.size, lo, n)
                if len(data) != n:
                    raise BlobUnavailable(
                        f"blob {body.digest}: ended at byte {lo + len(data)} of {body.size}"
                    )
                parts.append(data)
            pos += n
            i += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

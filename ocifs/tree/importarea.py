"""The contract between the FUSE adapter and the `.import/` area.

The read-only tree owns every inode below `IMPORT_INODE_BASE`; the import area
(implemented in `ocifs.importer`) owns `.import/` itself and every inode at or
above the base, and the adapter forwards each operation on those inodes here.
Methods raise the typed errors of `ocifs.errors` (or `OSError` from the host
filesystem); the adapter maps them to errno. Names are `str` decoded with
`os.fsdecode` (surrogateescape), so any byte string round-trips.

Visibility: once `flush` returns for a write that completed an import, the new
blobs and index entries are on disk; the area then calls the `on_change`
callback it was given so the tree refreshes `blobs/`, `refs/`, `by-digest/`
and `index.json` and invalidates the kernel's cached entries.
"""

from __future__ import annotations

from typing import Protocol

from ocifs.tree.attr import Attr
from ocifs.tree.kernelcache import KernelCache


class ImportArea(Protocol):
    #: inode of `.import/` itself (>= IMPORT_INODE_BASE)
    root_inode: int
    #: set by the FUSE adapter: where changes of the report files are announced
    kernel: KernelCache

    def owns(self, inode: int) -> bool: ...

    async def lookup(self, parent: int, name: str) -> Attr: ...

    async def getattr(self, inode: int) -> Attr: ...

    async def readdir(self, inode: int) -> list[tuple[str, Attr]]: ...

    async def mkdir(self, parent: int, name: str, mode: int) -> Attr: ...

    async def create(
        self, parent: int, name: str, mode: int, flags: int, pid: int = 0
    ) -> tuple[int, Attr]:
        """Start an ingest; returns (file handle, attributes). `pid`: the caller."""
        ...

    async def open(self, inode: int, flags: int, pid: int = 0) -> int:
        """Open an existing node (status files for reading, an ingest for writing)."""
        ...

    async def read(self, fh: int, offset: int, size: int) -> bytes: ...

    async def write(self, fh: int, offset: int, data: bytes) -> int: ...

    async def flush(self, fh: int) -> None:
        """Verify and commit what the handle has written; errors reach close()."""
        ...

    async def release(self, fh: int) -> None: ...

    async def setattr(self, inode: int, size: int | None, fh: int | None) -> Attr:
        """Only truncation of an ingest is meaningful; other changes are ignored."""
        ...

    async def unlink(self, parent: int, name: str) -> None: ...

    async def rmdir(self, parent: int, name: str) -> None: ...

    async def rename(self, parent: int, name: str, new_parent: int, new_name: str) -> None: ...

    def close(self) -> None:
        """Abort pending ingests at unmount (staging files are removed)."""
        ...

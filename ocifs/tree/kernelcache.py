"""Telling the kernel that a mutable file or directory entry changed.

The mount runs with FUSE's writeback cache (it makes `.import/` writes fast).
With it, the kernel keeps its own size of every regular file and never takes a
new size from `getattr`: a file whose content changes in place would be read
cut at its old size, and `stat` would show the old size, for as long as the
kernel keeps the inode. So files that change (index.json, `.import/.status`,
`.import/.errors`, `.import/.pending`) follow one rule, implemented by
`ChangingFile`:

* a change that only appends keeps the inode, and the appended bytes are pushed
  into the kernel's cache (`store`), which also grows its size: `tail -f` on an
  open descriptor sees the new lines;
* any other change gives the file a new inode number and drops the old name
  from the kernel's dentry cache (`entry`): the next path lookup creates a
  fresh inode with the right size. Descriptors already open keep reading the
  version they opened, whole (a snapshot per open);
* these files are looked up with entry/attr timeout 0 and read with direct_io,
  so nothing depends on the notifications arriving before the next request.

Notifications are only queued here: `ocifs.fuse` sends them from a separate
task, never from inside a request handler (the kernel may wait for that very
request, and the mount would deadlock).
"""

from __future__ import annotations

from collections.abc import Callable


class KernelCache:
    """Where nodes queue kernel cache notifications; the default does nothing."""

    def entry(self, parent: int, name: str) -> None:
        """Forget the dentry `name` in directory `parent`."""

    def inode(self, inode: int) -> None:
        """Forget an inode's cached attributes and pages."""

    def attrs(self, inode: int) -> None:
        """Forget an inode's cached attributes only (the next write() asks getattr)."""

    def store(self, inode: int, offset: int, data: bytes) -> None:
        """Put `data` at `offset` into the inode's page cache (grows its size)."""


class ChangingFile:
    """The current content and inode number of one file that changes while mounted.

    `update` applies the rule of the module docstring and returns the inode
    number that was retired, if any (callers keep it resolving to the file, so
    a descriptor or `fstat` on the old inode still answers).
    """

    def __init__(self, inode: int, data: bytes, alloc: Callable[[], int]) -> None:
        self.inode = inode
        self.data = data
        self._alloc = alloc

    def update(
        self, data: bytes, kernel: KernelCache, parent: int, name: str
    ) -> int | None:
        old = self.data
        if data == old:
            return None
        self.data = data
        if data.startswith(old):
            kernel.store(self.inode, len(old), data[len(old) :])
            return None
        retired = self.inode
        self.inode = self._alloc()
        kernel.entry(parent, name)
        # Its pages stay: they hold the old version, which is what descriptors
        # opened on the retired inode read. Only its attributes are dropped.
        kernel.attrs(retired)
        return retired


class OpenVersion:
    """What one open descriptor of a `ChangingFile` reads: the version it opened,
    and what was appended to it since (while the inode is still current)."""

    def __init__(self, file: ChangingFile) -> None:
        self.file = file
        self.inode = file.inode
        self.data = file.data

    def read(self, offset: int, size: int) -> bytes:
        if self.file.inode == self.inode:
            self.data = self.file.data
        return self.data[offset : offset + size]

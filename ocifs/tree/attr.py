"""Attributes of a node as the tree reports them; `ocifs.fuse` turns them into replies."""

from __future__ import annotations

import stat
from dataclasses import dataclass

ROOT_INODE = 1
# Inodes at or above this belong to the `.import/` area (ocifs.importer), which
# allocates them itself; the read-only tree allocates below it.
IMPORT_INODE_BASE = 1 << 48


@dataclass(slots=True)
class Attr:
    """What `stat` shows for one node.

    `mutable` tells the FUSE edge how long the kernel may cache the node:
    content-addressed nodes never change (long timeouts, keep_cache), while
    `index.json`, `refs/`, `by-digest/`, `blobs/` listings and `.import/` do.
    """

    inode: int
    mode: int
    size: int = 0
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    rdev: int = 0
    mutable: bool = False
    #: a regular file whose content changes underneath its readers (index.json,
    #: .import/.status): looked up afresh every time, see ocifs.tree.kernelcache
    changing: bool = False

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def dir_attr(inode: int, mtime_ns: int = 0, mutable: bool = False, perm: int = 0o555) -> Attr:
    return Attr(inode=inode, mode=stat.S_IFDIR | perm, nlink=2, mtime_ns=mtime_ns, mutable=mutable)


def file_attr(
    inode: int, size: int, mtime_ns: int = 0, mutable: bool = False, perm: int = 0o444
) -> Attr:
    return Attr(
        inode=inode, mode=stat.S_IFREG | perm, size=size, mtime_ns=mtime_ns, mutable=mutable
    )

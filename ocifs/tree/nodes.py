"""Node kinds of the virtual tree.

Directories build their children lazily, once (single-flight: concurrent first
lookups wait for one build). Nodes never change after they are built, except
the few `mutable` directories (root, `refs/`, `by-digest/`, `blobs/`) whose
children are recomputed by `Tree.refresh()` when index.json or the blob set
changes. Everything runs on the trio thread; slow work (layer indexing) is
awaited, never done inline.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ocifs.errors import IsADirectory, NotADirectory
from ocifs.model.naming import name_problem
from ocifs.tree.attr import Attr
from ocifs.tree.kernelcache import ChangingFile, OpenVersion

if TYPE_CHECKING:
    from ocifs.model.digest import Digest
    from ocifs.tree.blobs import BlobAccess

log = logging.getLogger(__name__)

Children = dict[str, "Node"]

#: Time shown for nodes that have no time of their own (synthesized directories, blobs).
MOUNT_TIME_NS = time.time_ns()


#: the namespace of the attributes ocifs itself answers (`virtual_xattrs`)
VIRTUAL_XATTR_PREFIX = "user.ocifs."

class Node:
    """Base of every node: an inode and its attributes."""

    __slots__ = ("inode",)

    def __init__(self, inode: int) -> None:
        self.inode = inode

    def attr(self) -> Attr:
        raise NotImplementedError

    @property
    def mutable(self) -> bool:
        return False

    async def children(self) -> Children:
        raise NotADirectory(f"inode {self.inode}: not a directory")

    async def child(self, name: str) -> Node | None:
        """One child by name (a directory may answer it before its whole listing)."""
        return (await self.children()).get(name)

    async def read(self, offset: int, size: int) -> bytes:
        raise IsADirectory(f"inode {self.inode}: is a directory")

    def check_open(self) -> None:
        """Raise if the file cannot be read at all (known bad blob)."""

    def ready_content(self, limit: int) -> bytes | None:
        """The whole content, if it is at most `limit` bytes and can be had without
        blocking or waiting; else None (`ocifs.fuse` pushes it into the kernel's
        page cache at open, saving the READ requests)."""
        return None

    def readlink(self) -> str:
        from ocifs.errors import InvalidInput

        raise InvalidInput(f"inode {self.inode}: not a symlink")

    def xattrs(self) -> dict[str, bytes]:
        return {}

    def virtual_xattrs(self) -> dict[str, bytes]:
        """Attributes ocifs answers about this node (not the image's; not listed);
        every name starts with VIRTUAL_XATTR_PREFIX."""
        return {}


class DirNode(Node):
    """A directory whose children come from an async builder, built once."""

    __slots__ = ("_build", "_building", "_children", "_mtime_ns", "_mutable", "_owner", "_perm")

    def __init__(
        self,
        inode: int,
        build: Callable[[], Awaitable[Children]] | None = None,
        *,
        children: Children | None = None,
        mtime_ns: int = MOUNT_TIME_NS,
        mutable: bool = False,
        perm: int = 0o555,
        owner: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__(inode)
        self._owner = owner
        self._build = build
        self._children = None if children is None else _showable(inode, children)
        self._building: trio.Event | None = None
        self._mtime_ns = mtime_ns
        self._mutable = mutable
        self._perm = perm

    @property
    def mutable(self) -> bool:
        return self._mutable

    def attr(self) -> Attr:
        return Attr(
            inode=self.inode,
            mode=stat.S_IFDIR | self._perm,
            nlink=2,
            uid=self._owner[0],
            gid=self._owner[1],
            mtime_ns=self._mtime_ns,
            mutable=self._mutable,
        )

    def set_children(self, children: Children) -> None:
        self._children = _showable(self.inode, children)

    def set_builder(self, build: Callable[[], Awaitable[Children]]) -> None:
        """For builders that need the node they build (created before the closure)."""
        self._build = build

    def reset(self) -> None:
        """Forget built children so the next access rebuilds them (mutable dirs)."""
        if self._build is not None:
            self._children = None

    async def children(self) -> Children:
        if self._children is not None:
            return self._children
        if self._building is not None:
            await self._building.wait()
            if self._children is not None:
                return self._children
        assert self._build is not None
        self._building = event = trio.Event()
        try:
            self._children = _showable(self.inode, await self._build())
        finally:
            self._building = None
            event.set()
        return self._children


def _showable(inode: int, children: Children) -> Children:
    """Drop names that cannot be file names (`naming.name_problem`): lookups and
    listings both read the dict returned here, so they always agree. Producers
    (layer indexes, refs, platforms) drop such names first, with a warning that
    says where they came from; this is the guard for every other directory."""
    bad = [name for name in children if name_problem(name)]
    for name in bad:
        log.warning("directory inode %d: name %r %s; not shown", inode, name, name_problem(name))
        del children[name]
    return children


class BytesFile(Node):
    """A small file held in memory (index.json, descriptor.json, oci-layout)."""

    __slots__ = ("_mutable", "data", "mtime_ns")

    def __init__(
        self, inode: int, data: bytes, *, mutable: bool = False, mtime_ns: int = MOUNT_TIME_NS
    ) -> None:
        super().__init__(inode)
        self.data = data
        self._mutable = mutable
        self.mtime_ns = mtime_ns

    @property
    def mutable(self) -> bool:
        return self._mutable

    def attr(self) -> Attr:
        return Attr(
            inode=self.inode,
            mode=stat.S_IFREG | 0o444,
            size=len(self.data),
            mtime_ns=self.mtime_ns,
            mutable=self._mutable,
        )

    async def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


class ChangingBytesFile(Node):
    """A small file whose content changes while mounted (index.json).

    Its inode number follows `content` (a new one for each non-append change, see
    `ocifs.tree.kernelcache`); the tree keeps retired numbers resolving here.
    """

    __slots__ = ("content", "mtime_ns")

    def __init__(self, content: ChangingFile, mtime_ns: int = MOUNT_TIME_NS) -> None:
        super().__init__(content.inode)
        self.content = content
        self.mtime_ns = mtime_ns

    @property
    def mutable(self) -> bool:
        return True

    @property
    def data(self) -> bytes:
        return self.content.data

    def attr(self) -> Attr:
        return Attr(
            inode=self.content.inode,
            mode=stat.S_IFREG | 0o444,
            size=len(self.content.data),
            mtime_ns=self.mtime_ns,
            mutable=True,
            changing=True,
        )

    def open_version(self) -> OpenVersion:
        return OpenVersion(self.content)

    async def read(self, offset: int, size: int) -> bytes:
        return self.content.data[offset : offset + size]


class BlobFile(Node):
    """A blob's bytes, read from the source; size is the descriptor's (or on-disk) size."""

    __slots__ = ("access", "digest", "size")

    def __init__(self, inode: int, access: BlobAccess, digest: Digest, size: int) -> None:
        super().__init__(inode)
        self.access = access
        self.digest = digest
        self.size = size

    def attr(self) -> Attr:
        return Attr(
            inode=self.inode, mode=stat.S_IFREG | 0o444, size=self.size, mtime_ns=MOUNT_TIME_NS
        )

    def check_open(self) -> None:
        self.access.check(self.digest, self.size)

    async def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size:
            return b""
        return await self.access.read(self.digest, self.size, offset, min(size, self.size - offset))


class SymlinkNode(Node):
    __slots__ = ("_attr", "target")

    def __init__(self, inode: int, target: str, attr: Attr) -> None:
        super().__init__(inode)
        self.target = target
        self._attr = attr

    def attr(self) -> Attr:
        return self._attr

    def readlink(self) -> str:
        return self.target


class GeneratedFile(Node):
    """A small report produced when it is opened (`.ocifs/status.json`).

    Each open reads one snapshot; the FUSE edge serves it with direct_io, so
    the size shown by `stat` (the last snapshot's) never cuts a read short.
    """

    __slots__ = ("_render", "last")

    def __init__(self, inode: int, render: Callable[[], Awaitable[bytes]]) -> None:
        super().__init__(inode)
        self._render = render
        self.last = b""

    @property
    def mutable(self) -> bool:
        return True

    def attr(self) -> Attr:
        return Attr(
            inode=self.inode,
            mode=stat.S_IFREG | 0o444,
            size=len(self.last),
            mtime_ns=time.time_ns(),
            mutable=True,
        )

    async def snapshot(self) -> bytes:
        self.last = await self._render()
        return self.last

    async def read(self, offset: int, size: int) -> bytes:
        return self.last[offset : offset + size]

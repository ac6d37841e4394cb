"""Nodes for layer contents: `layers/<n>/` trees and the merged `rootfs/`.

Directories are per place in the tree (a directory inode has one parent), but
files, symlinks and special files are shared by (layer digest, identity): the
same layer seen from two images, a hard link, and the rootfs view of a file all
reach one inode, so the kernel's page cache is shared between them too.

Provenance: every layer entry answers `getxattr user.ocifs.layer` with
`<n> <layer digest>`, the position of the layer that supplied it in the image's
manifest (what `layers/<n>/` shows) and the layer's digest. Because the answer
is per inode, member nodes are shared per (layer digest, identity, position):
the same layer at another position in another image gets its own inodes. The
attribute is not listed by listxattr (like CephFS's `ceph.*` virtual
attributes), so `cp -a`, `rsync -X` and `tar --xattrs` copy only what the
image stores.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ocifs import catalog
from ocifs import log as log_mod
from ocifs.errors import InvalidInput, OcifsError
from ocifs.layers.entry import Entry, Kind
from ocifs.model import documents
from ocifs.tree.attr import Attr
from ocifs.tree.nodes import VIRTUAL_XATTR_PREFIX, Children, DirNode, Node

if TYPE_CHECKING:
    from ocifs.layers.entry import LayerIndex
    from ocifs.layers.merge import MergedTree
    from ocifs.layers.store import LayerStore
    from ocifs.model.descriptor import Descriptor
    from ocifs.model.digest import Digest
    from ocifs.model.documents import Manifest
    from ocifs.tree.tree import Tree

log = logging.getLogger(__name__)

_TYPE_BITS = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.CHAR: stat.S_IFCHR,
    Kind.BLOCK: stat.S_IFBLK,
    Kind.FIFO: stat.S_IFIFO,
}


def entry_attr(inode: int, entry: Entry, link: str | None = None) -> Attr:
    """`link`: the symlink target shown, when it is not the stored one (its size is shown)."""
    size = entry.size if entry.kind == Kind.FILE else 0
    perm = entry.mode & 0o7777
    if entry.kind == Kind.SYMLINK:
        size = len((entry.link if link is None else link).encode("utf-8", "surrogateescape"))
        perm = 0o777  # what lstat shows after `tar -x` (Linux symlinks have no mode)
    return Attr(
        inode=inode,
        mode=_TYPE_BITS[entry.kind] | perm,
        size=size,
        nlink=max(1, entry.nlink),
        uid=entry.uid,
        gid=entry.gid,
        mtime_ns=entry.mtime_ns,
        rdev=entry.rdev,
    )


#: The virtual xattr naming the layer an entry comes from (see the module docstring).
LAYER_XATTR = f"{VIRTUAL_XATTR_PREFIX}layer"


def layer_xattr(position: int, digest: Digest) -> dict[str, bytes]:
    return {LAYER_XATTR: f"{position} {digest}".encode()}


class MemberNode(Node):
    """A non-directory layer entry (file, symlink, device, fifo) of the layer at `position`.

    `link` overrides the stored symlink target (`-o symlinks=contained`).
    """

    __slots__ = ("desc", "entry", "link", "position", "store")

    def __init__(
        self,
        inode: int,
        store: LayerStore,
        desc: Descriptor,
        entry: Entry,
        position: int,
        link: str | None = None,
    ) -> None:
        super().__init__(inode)
        self.store = store
        self.desc = desc
        self.entry = entry
        self.position = position
        self.link = entry.link if link is None else link

    def attr(self) -> Attr:
        # computed per call, not kept: ~150 bytes per node of a million-member layer
        return entry_attr(self.inode, self.entry, self.link)

    async def read(self, offset: int, size: int) -> bytes:
        entry = self.entry
        if entry.kind != Kind.FILE:
            # Devices and fifos are shown, never opened on the host: they read as empty.
            return b""
        if offset >= entry.size:
            return b""
        return await self.store.read(self.desc, entry, offset, min(size, entry.size - offset))

    def readlink(self) -> str:
        if self.entry.kind != Kind.SYMLINK:
            raise InvalidInput(f"inode {self.inode}: not a symlink")
        return self.link

    def xattrs(self) -> dict[str, bytes]:
        return self.entry.xattrs or {}

    def virtual_xattrs(self) -> dict[str, bytes]:
        return layer_xattr(self.position, self.desc.digest)


class EntryDir(DirNode):
    """A directory that takes its attributes from a layer entry.

    `origin` is (position, digest) of the layer that entry belongs to.
    """

    __slots__ = ("entry", "origin")

    def __init__(
        self,
        inode: int,
        entry: Entry | None,
        build: Callable[[], Awaitable[Children]] | None,
        origin: tuple[int, Digest] | None = None,
    ) -> None:
        super().__init__(inode, build)
        self.entry = entry
        self.origin = origin

    def attr(self) -> Attr:
        if self.entry is None:
            return super().attr()
        return entry_attr(self.inode, self.entry)

    def xattrs(self) -> dict[str, bytes]:
        return (self.entry.xattrs or {}) if self.entry is not None else {}

    def virtual_xattrs(self) -> dict[str, bytes]:
        return layer_xattr(*self.origin) if self.origin is not None else {}


def layer_dir(
    tree: Tree, desc: Descriptor, index: LayerIndex, idx: int, position: int
) -> EntryDir:
    """The directory entry `idx` of the tree of the layer at `position`, built on first use."""

    async def build() -> Children:
        children: Children = {}
        for name, child in (index.children[idx] or {}).items():
            entry = index.entries[child]
            if entry.kind == Kind.DIR:
                children[name] = layer_dir(tree, desc, index, child, position)
            else:
                children[name] = tree.member_node(desc, index, entry.identity, position)
        return children

    return EntryDir(tree.alloc_inode(), index.entries[idx], build, (position, desc.digest))


def layer_root(tree: Tree, desc: Descriptor, position: int) -> EntryDir:
    """`layers/<n>/`: indexing starts on first lookup or listing, not before.

    Its own attributes are fixed (0555, mount time) rather than the tar's `./`
    entry: they are shown before the layer is read, and must not change after
    (tar would report "file changed as we read it").
    """
    store = tree.layers
    node = EntryDir(tree.alloc_inode(), None, None, (position, desc.digest))

    async def build() -> Children:
        try:
            index = await store.index(desc)
        except OcifsError as exc:
            log_mod.once(log, logging.ERROR, str(exc), cause=str(exc))
            raise
        inner = layer_dir(tree, desc, index, 0, position)
        return await inner.children()

    node.set_builder(build)
    return node


def rootfs_dir(
    tree: Tree, descs: list[Descriptor], indexes: list[LayerIndex], merged: MergedTree, node_id: int
) -> EntryDir:
    layer_no, entry_idx = merged.source(node_id)

    async def build() -> Children:
        children: Children = {}
        for name, child in merged.children(node_id).items():
            c_layer, c_idx = merged.source(child)
            entry = indexes[c_layer].entries[c_idx]
            if entry.kind == Kind.DIR:
                children[name] = rootfs_dir(tree, descs, indexes, merged, child)
            else:
                children[name] = tree.member_node(
                    descs[c_layer], indexes[c_layer], entry.identity, c_layer
                )
        return children

    origin = (layer_no, descs[layer_no].digest)
    return EntryDir(tree.alloc_inode(), indexes[layer_no].entries[entry_idx], build, origin)


def rootfs_root(tree: Tree, manifest: Manifest) -> EntryDir:
    """`rootfs/`: merging (and indexing every layer) starts on first use.

    Fixed attributes, like `layer_root`, for the same reason. Shown only if
    every layer decompresses to the digest the config's `rootfs.diff_ids`
    gives it: otherwise the image is not the one the config describes, and
    `rootfs/` fails with EIO (the reason logged once); each `layers/<n>/`
    stays browsable, since a layer is checked against its own digest.
    """
    node = EntryDir(tree.alloc_inode(), None, None)
    descs = manifest.layers

    async def build() -> Children:
        store = tree.layers
        try:
            config = await trio.to_thread.run_sync(
                catalog.read_document, tree.source, manifest.config, limiter=tree.io_limiter
            )
            diff_ids = documents.parse_diff_ids(config, f"config {manifest.config.digest}")
            indexes = [await store.index(d) for d in descs]
            await store.check_diff_ids(descs, diff_ids, f"image config {manifest.config.digest}")
            merged = await store.merged(descs)
        except OcifsError as exc:
            log_mod.once(log, logging.ERROR, f"rootfs: {exc}", cause=str(exc))
            raise
        inner = rootfs_dir(tree, descs, indexes, merged, 0)
        return await inner.children()

    node.set_builder(build)
    return node

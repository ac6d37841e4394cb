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
from ocifs.errors import InvalidInput, LayerCorrupt, NotFound, OcifsError, Unmounting
from ocifs.layers.entry import Entry, Kind
from ocifs.model import documents
from ocifs.model.naming import name_problem
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
        attr = entry_attr(self.inode, self.entry, self.link)
        if not self.store.settled(self.desc, self.entry):
            provisional(attr)  # answered by a running pass (LayerDir.child)
        return attr

    async def read(self, offset: int, size: int) -> bytes:
        entry = self.entry
        if entry.kind != Kind.FILE:
            # Devices and fifos are shown, never opened on the host: they read as empty.
            return b""
        if offset >= entry.size:
            return b""
        data = await self.store.read(self.desc, entry, offset, min(size, entry.size - offset))
        if not self.store.settled(self.desc, entry):
            # answered by a pass that failed; the final index has other offsets
            raise LayerCorrupt(f"layer {self.desc.digest}: {entry.name!r} is from a failed pass")
        return data

    def ready_content(self, limit: int) -> bytes | None:
        return self.store.read_ready(self.desc, self.entry, limit)

    def readlink(self) -> str:
        if self.entry.kind != Kind.SYMLINK:
            raise InvalidInput(f"inode {self.inode}: not a symlink")
        self._check_not_failed()
        return self.link

    def xattrs(self) -> dict[str, bytes]:
        self._check_not_failed()
        return self.entry.xattrs or {}

    def _check_not_failed(self) -> None:
        """Metadata answered early, from a pass that has since failed (e.g. the blob
        did not match its digest), is not served any more: EIO, as reads are."""
        entry = self.entry
        if self.store.live(self.desc) is None and not self.store.settled(self.desc, entry):
            raise LayerCorrupt(f"layer {self.desc.digest}: {entry.name!r} is from a failed pass")

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


class LayerView:
    """One `layers/<n>/` tree: its layer, and its directory nodes by entry number,
    so a directory answered while the layer was being indexed keeps its inode
    once the index is final."""

    __slots__ = ("desc", "dirs", "position", "tree")

    def __init__(self, tree: Tree, desc: Descriptor, position: int) -> None:
        self.tree = tree
        self.desc = desc
        self.position = position
        self.dirs: dict[int, LayerDir] = {}

    def node(self, index: LayerIndex, number: int) -> Node:
        """The node of entry `number` of `index` (final, or a running pass's view)."""
        entry = index.entries[number]
        if entry.kind != Kind.DIR:
            return self.tree.member_node(self.desc, index, entry.identity, self.position)
        node = self.dirs.get(number)
        if node is None or node.entry is not entry:
            node = self.dirs[number] = LayerDir(self.tree.alloc_inode(), self, number, entry)
        return node

    def settled(self, entry: Entry) -> bool:
        return self.tree.layers.settled(self.desc, entry)

    def forget_early(self) -> None:
        """The pass failed: drop the nodes it answered (a retry builds new ones)."""
        self.dirs.clear()
        self.tree.forget_members(self.desc, self.position)

    async def early_child(self, directory: LayerDir, name: str) -> Node | None:
        """`name` in `directory` as the running pass has it (waiting until the pass
        reaches it); None when no pass runs or it ended without the name seen:
        then only the final index can answer."""
        store = self.tree.layers
        store.start(self.desc)
        live = store.live(self.desc)
        if live is None or name_problem(name) is not None:
            return None
        number = directory.number
        while not live.ended:
            view = live.view
            if view is not None:
                entries = view.entries
                if directory.entry is not None and (
                    number >= len(entries) or entries[number] is not directory.entry
                ):
                    return None  # a directory of an earlier, failed pass
                found = live.find(number, name)
                if found is not None:
                    return self.node(view, found)
            await live.wait_for(number, name)
        return None


class LayerDir(EntryDir):
    """A directory of a layer's tree (`number` 0, entry None: the layer's root).

    Lookups are answered from the running indexing pass when it has seen the
    name (provisional: kernel timeouts 0 until the index is final); listings,
    and lookups of names not seen, wait for the final index.
    """

    __slots__ = ("number", "view")

    def __init__(self, inode: int, view: LayerView, number: int, entry: Entry | None) -> None:
        super().__init__(inode, entry, None, (view.position, view.desc.digest))
        self.view = view
        self.number = number
        self.set_builder(self._final_children)

    async def _final_children(self) -> Children:
        view = self.view
        try:
            index = await view.tree.layers.index(view.desc)
        except OcifsError as exc:
            view.forget_early()
            log_mod.once(log, _level(exc), str(exc), cause=str(exc))
            raise
        entries = index.entries
        if self.entry is not None and (
            self.number >= len(entries) or entries[self.number] is not self.entry
        ):
            raise NotFound(f"layer {view.desc.digest}: directory of an earlier, failed pass")
        kids = index.children[self.number] or {}
        return {name: view.node(index, child) for name, child in kids.items()}

    async def child(self, name: str) -> Node | None:
        if self._children is None:
            early = await self.view.early_child(self, name)
            if early is not None:
                return early
        return (await self.children()).get(name)

    def attr(self) -> Attr:
        attr = super().attr()
        if self.entry is not None and not self.view.settled(self.entry):
            provisional(attr)
        return attr


def provisional(attr: Attr) -> Attr:
    """Mark an answer from a running pass: the kernel must ask again every time
    (timeouts 0, as for files that change), until the index is final."""
    attr.mutable = attr.changing = True
    return attr


def layer_root(tree: Tree, desc: Descriptor, position: int) -> LayerDir:
    """`layers/<n>/`: indexing starts on first lookup or listing, not before.

    Its own attributes are fixed (0555, mount time) rather than the tar's `./`
    entry: they are shown before the layer is read, and must not change after
    (tar would report "file changed as we read it").
    """
    return LayerDir(tree.alloc_inode(), LayerView(tree, desc, position), 0, None)


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
        store.need_diff_ids(descs)
        for desc in descs:
            store.start(desc)  # every layer indexes at once (two worker threads)
        try:
            config = await trio.to_thread.run_sync(
                catalog.read_document, tree.source, manifest.config, limiter=tree.io_limiter
            )
            diff_ids = documents.parse_diff_ids(config, f"config {manifest.config.digest}")
            merged = await checked_merge(
                store, descs, diff_ids, f"image config {manifest.config.digest}"
            )
            indexes = [await store.index(d) for d in descs]
        except (OcifsError, OSError) as exc:  # the reason once, not per request
            log_mod.once(log, _level(exc), f"rootfs: {exc}", cause=str(exc))
            raise
        inner = rootfs_dir(tree, descs, indexes, merged, 0)
        return await inner.children()

    node.set_builder(build)
    return node


def _level(exc: OcifsError | OSError) -> int:
    """A layer that failed is an error; one stopped by the unmount is not."""
    return logging.INFO if isinstance(exc, Unmounting) else logging.ERROR


async def checked_merge(
    store: LayerStore, descs: list[Descriptor], diff_ids: list[str], where: str
) -> MergedTree:
    """The merged tree, once every layer matched its config diff_id.

    The diff_ids are hashed (worker threads, `LayerStore.check_diff_ids`) while
    the merge runs; a mismatch wins over the merge's outcome, so `rootfs/` is
    never served from a layer the config does not name: the merge is cancelled,
    and a merged tree it already made is not kept for the next `rootfs/`.
    """
    # Errors are kept and raised after the nursery: raised inside it they would
    # leave it as an ExceptionGroup, which `fuse._edge` cannot map to an errno.
    merged: list[MergedTree | OcifsError | OSError] = []
    checked: list[OcifsError | OSError] = []

    async def merge() -> None:
        try:
            for desc in descs:  # a layer's own error, not the merge's task group
                await store.index(desc)
            merged.append(await store.merged(descs))
        except (OcifsError, OSError) as exc:
            merged.append(exc)

    async with trio.open_nursery() as nursery:

        async def check() -> None:
            try:
                await store.check_diff_ids(descs, diff_ids, where)
            except (OcifsError, OSError) as exc:
                checked.append(exc)
                nursery.cancel_scope.cancel()

        nursery.start_soon(check)
        nursery.start_soon(merge)
    if checked:
        store.forget_merged(descs)
        raise checked[0]
    if isinstance(merged[0], (OcifsError, OSError)):
        raise merged[0]
    return merged[0]

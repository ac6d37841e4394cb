"""The whole mounted tree: inode table, the fixed top level, refs and by-digest.

Layout (see README): `oci-layout`, `index.json`, `blobs/<alg>/<hex>`,
`refs/<name>/`, `by-digest/<alg>:<hex>/`, and `.import/` for writable sources
(owned by the import area). The parts that follow index.json are rebuilt by
`refresh()`; everything below a manifest directory is immutable.

Source files are read in worker threads (documents, blob listings), never on
the trio thread. A manifest or index that cannot be used (unreadable blob,
invalid JSON, ambiguous document, Docker schema 1) still gets its directory:
the raw document, `descriptor.json`, and `error.txt` with the reason, logged
once. Indexes inside indexes are followed `MAX_PLATFORM_DEPTH` levels down
`platforms/`; a directory deeper than that fails with ELOOP (a cycle cannot
exist: a document cannot contain its own digest).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from ocifs import catalog as catalog_mod
from ocifs import export
from ocifs import log as log_mod
from ocifs.docmemo import DocumentMemo
from ocifs.durable import test_env
from ocifs.errors import (
    BlobUnavailable,
    NoSuchName,
    NotFound,
    OcifsError,
    TooDeep,
    Unmounting,
    Unsupported,
)
from ocifs.layers.entry import Kind
from ocifs.model import documents
from ocifs.model import mediatypes as mt
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import HEX_LENGTHS, Digest
from ocifs.model.naming import name_problem, platform_dir
from ocifs.sources.base import Source
from ocifs.tree import layertree, symlinks
from ocifs.tree.attr import IMPORT_INODE_BASE, ROOT_INODE
from ocifs.tree.blobs import BlobAccess
from ocifs.tree.exportfile import ExportFile
from ocifs.tree.kernelcache import ChangingFile, KernelCache
from ocifs.tree.nodes import BlobFile, BytesFile, ChangingBytesFile, Children, DirNode, Node

if TYPE_CHECKING:
    from ocifs.layers.entry import LayerIndex
    from ocifs.layers.store import LayerStore

log = logging.getLogger(__name__)

N = TypeVar("N", bound=Node)

#: Test-only: looking up this name raises an unexpected exception (proves the FUSE
#: edge contains it). Read once; empty outside OCIFS_TEST_MODE=1.
_TEST_CRASH_NAME = test_env("OCIFS_TEST_CRASH_LOOKUP")

#: `platforms/` levels shown below a ref's index (deeper directories: ELOOP).
MAX_PLATFORM_DEPTH = catalog_mod.MAX_INDEX_DEPTH
#: name of the file that says why a manifest or index directory is incomplete
ERROR_FILE = "error.txt"


class Tree:
    """See the module docstring. All methods run on the trio thread."""

    def __init__(
        self, source: Source, layers: LayerStore, *, contain_symlinks: bool = False
    ) -> None:
        self.source = source
        self.layers = layers
        #: show symlink targets rewritten to stay inside the image root (ocifs.tree.symlinks)
        self.contain_symlinks = contain_symlinks
        self.blob_access = BlobAccess(source)
        #: verified manifests and indexes, shared by directory builds and export plans
        self.documents = DocumentMemo()
        #: worker threads that read source documents and list blobs
        self.io_limiter = trio.CapacityLimiter(2)
        self._refreshing: trio.Event | None = None
        #: worker threads that read the documents of an image.tar's closure
        self.export_limiter = trio.CapacityLimiter(2)
        self.nodes: dict[int, Node] = {}
        self._next_inode = ROOT_INODE
        # (layer digest, its position in the image) -> node per entry identity (a
        # list: 8 bytes per member, no tuple key and dict slot per member); the
        # position is part of the key for the provenance xattr (user.ocifs.layer)
        self._members: dict[tuple[Digest, int], list[layertree.MemberNode | None]] = {}
        self._blob_files: dict[tuple[Digest, int], BlobFile] = {}
        self._image_dirs: dict[tuple[str, Digest], DirNode] = {}
        # image directories built while their document was unreadable; retried on refresh
        self._incomplete: set[DirNode] = set()
        #: installs by the synchronous `refresh` (imports): a worker-thread re-read
        #: that started before one of them may hold an older index.json
        self._sync_installs = 0
        self._refs_dirs: dict[tuple[str, ...], DirNode] = {}
        #: inode -> refs/ path of every directory currently under refs/ (refs/ itself: ())
        self.refs_paths: dict[int, tuple[str, ...]] = {}
        # Directories whose entries can be removed or renamed (rmdir refs/x untags,
        # rm blobs/<alg>/<hex> deletes) are writable by the mount's owner, so the
        # kernel's permission check (default_permissions) lets those requests through.
        self._edit_perm = 0o755 if source.writable else 0o555
        self._edit_owner = (os.getuid(), os.getgid()) if source.writable else (0, 0)
        self._warned_names: set[tuple[Digest, str]] = set()
        #: set by the FUSE adapter; queues kernel cache notifications
        self.kernel = KernelCache()

        now = time.time_ns()
        self.root = self._register(
            DirNode(self.alloc_inode(), children={}, mutable=True, mtime_ns=now, perm=0o755)
        )
        self.oci_layout = self._register(BytesFile(self.alloc_inode(), source.oci_layout_bytes()))
        self.index_file = self._register(
            ChangingBytesFile(ChangingFile(self.alloc_inode(), b"", self.alloc_inode))
        )
        self.refs = self._register(
            DirNode(
                self.alloc_inode(),
                children={},
                mutable=True,
                perm=self._edit_perm,
                owner=self._edit_owner,
            )
        )
        self._refs_dirs[()] = self.refs
        self.by_digest = self._register(
            DirNode(self.alloc_inode(), self._build_by_digest, mutable=True)
        )
        self.blobs = self._register(DirNode(self.alloc_inode(), children={}, mutable=True))
        self._blob_algs: dict[str, DirNode] = {}
        for alg in sorted(HEX_LENGTHS):
            self._blob_algs[alg] = self._register(
                DirNode(
                    self.alloc_inode(),
                    self._blob_lister(alg),
                    mutable=True,
                    perm=self._edit_perm,
                    owner=self._edit_owner,
                )
            )
        self.blobs.set_children(dict(self._blob_algs))
        #: inode of blobs/<alg>/ -> alg (where `rm` deletes blobs)
        self.blob_alg_dirs = {node.inode: alg for alg, node in self._blob_algs.items()}
        self.root.set_children(
            {
                "oci-layout": self.oci_layout,
                "index.json": self.index_file,
                "blobs": self.blobs,
                "refs": self.refs,
                "by-digest": self.by_digest,
            }
        )
        self.catalog = catalog_mod.build(source)
        self._apply_catalog(self.catalog, initial=True)

    def attach(self, name: str, node: Node) -> None:
        """Add a fixed top-level entry (the mount's own `.ocifs/` report directory)."""
        self.root.set_children({**(self.root._children or {}), name: node})
        self._register(node)

    # ----- inode table -------------------------------------------------------

    def alloc_inode(self) -> int:
        ino = self._next_inode
        self._next_inode += 1
        if ino >= IMPORT_INODE_BASE:
            raise OcifsError("inode space exhausted")
        return ino

    def _register(self, node: N) -> N:
        self.nodes[node.inode] = node
        return node

    def get(self, inode: int) -> Node:
        node = self.nodes.get(inode)
        if node is None:
            raise NotFound(f"inode {inode}: unknown")
        return node

    async def lookup(self, parent: int, name: str) -> Node:
        if _TEST_CRASH_NAME and name == _TEST_CRASH_NAME:
            raise RuntimeError(f"test-only crash on lookup of {name!r}")
        pnode = self.get(parent)
        if pnode.mutable:
            await self.maybe_refresh(pnode)
        child = await pnode.child(name)
        if child is None:
            # an image directory built without its document may gain children
            raise NoSuchName(name, final=not pnode.mutable and pnode not in self._incomplete)
        self.nodes[child.inode] = child
        return child

    async def listdir(self, inode: int) -> Children:
        node = self.get(inode)
        if node.mutable:
            await self.maybe_refresh(node)
        children = await node.children()
        nodes = self.nodes
        for child in children.values():
            nodes[child.inode] = child
        return children

    # ----- shared nodes ------------------------------------------------------

    def member_node(
        self, desc: Descriptor, index: LayerIndex, identity: int, position: int
    ) -> Node:
        """The one inode of a layer entry, per position of its layer (provenance xattr)."""
        key = (desc.digest, position)
        nodes = self._members.get(key)
        if nodes is None:
            nodes = self._members[key] = [None] * len(index.entries)
        elif identity >= len(nodes):  # made while the layer was being indexed
            nodes.extend([None] * (len(index.entries) - len(nodes)))
        node = nodes[identity]
        entry = index.entries[identity]
        # A node of an earlier pass that failed (answered early, then retried
        # before anyone listed its directory) belongs to another index: replace it.
        if node is None or node.entry is not entry:
            link = None
            if self.contain_symlinks and entry.kind is Kind.SYMLINK:
                link = symlinks.contained_target(index.path(identity), entry.link)
            node = nodes[identity] = layertree.MemberNode(
                self.alloc_inode(), self.layers, desc, entry, position, link
            )
        return node

    def forget_members(self, desc: Descriptor, position: int) -> None:
        """Drop the member nodes of a layer whose indexing pass failed (they were
        answered from it provisionally); a later pass makes new ones."""
        self._members.pop((desc.digest, position), None)

    def blob_file(self, digest: Digest, size: int) -> BlobFile:
        key = (digest, size)
        node = self._blob_files.get(key)
        if node is None:
            node = self._blob_files[key] = BlobFile(
                self.alloc_inode(), self.blob_access, digest, size
            )
        return node

    def invalidate(self, inode: int, name: str | None) -> None:
        """(parent inode, name) drops a dentry; (inode, None) an inode's attributes and data."""
        if name is None:
            self.kernel.inode(inode)
        else:
            self.kernel.entry(inode, name)

    # ----- index.json, refs/ and by-digest/ ----------------------------------

    async def maybe_refresh(self, node: Node | None = None) -> None:
        """Pick up changes made outside this process (another ocifs, skopeo, `ocifs gc`).

        Called on every access to a mutable directory `node`: `index_changed` is
        one stat, and a throttle here let a listing miss an import that had
        already returned (two daemons on one layout). Only where a listing of
        blobs/ is served (`node` is blobs/ or blobs/<alg>/) is the blob set
        checked too (`blobs_changed`). A changed index.json is read and parsed
        in a worker thread (it may be large); concurrent callers wait for that
        one re-read.
        """
        if self._refreshing is not None:
            await self._refreshing.wait()
            return
        index = self.source.index_changed()
        blobs = self._serves_blobs(node) and self.source.blobs_changed()
        if not index and not blobs:
            return
        if blobs and self._incomplete:
            # an image directory waits for a blob that may just have arrived: rebuild
            # from the catalog, as an index.json change does
            index = True
        self._refreshing = done = trio.Event()
        try:
            listed = self._listed_blobs()
            if index:
                seen = self._sync_installs
                cat, gone = await trio.to_thread.run_sync(
                    self._reread, listed, limiter=self.io_limiter
                )
                if seen != self._sync_installs:
                    return  # `refresh` installed a file at least as new meanwhile
            else:  # only blobs/ changed: the catalog stays
                cat, gone = None, await trio.to_thread.run_sync(
                    self._gone_blobs, listed, limiter=self.io_limiter
                )
            if cat is not None:
                self._install(cat, gone=gone)
            elif not index:
                self._blobs_changed(gone)
        finally:
            self._refreshing = None
            done.set()

    def _serves_blobs(self, node: Node | None) -> bool:
        return node is not None and (node is self.blobs or node.inode in self.blob_alg_dirs)

    def refresh(
        self,
        kernel_updated: frozenset[tuple[str, ...]] = frozenset(),
        unlinked_blob: Digest | None = None,
    ) -> None:
        """Re-read index.json and the blob set; invalidate what the kernel cached.

        Synchronous, for the import area right after it rewrote index.json (it
        calls back from its own code path); untag, retag and blob removal use
        `reload`, which reads in a worker thread. Every change of index.json made
        by ocifs goes through one of the two (anything that rewrites it must
        call one afterwards); changes noticed from outside go through
        `maybe_refresh` and the same `_install`: readers then see the new file
        whole, with its new size (`ocifs.tree.kernelcache`), and the new refs/.
        `kernel_updated` (refs/ paths) and `unlinked_blob`: dentries the kernel
        already changed itself (the target of the rmdir, rename or unlink being
        answered). They are not invalidated: that would wait for the directory
        lock the very request holds, and a daemon killed meanwhile could never
        exit.
        """
        listed = [b for b in self._listed_blobs() if b[2] != unlinked_blob]
        cat, gone = self._reread(listed)
        self._sync_installs += 1  # a re-read in a worker thread now may be older
        if cat is not None:
            self._install(cat, kernel_updated, gone=gone)

    async def reload(
        self,
        kernel_updated: frozenset[tuple[str, ...]] = frozenset(),
        unlinked_blob: Digest | None = None,
        before_install: Callable[[], None] | None = None,
    ) -> None:
        """`refresh` with the reading (index.json, one stat per listed blob) in a worker
        thread, as `maybe_refresh` does: for the edits answered on the trio thread.

        Serialised with `maybe_refresh`: a re-read started before the edit wrote
        index.json finishes (and installs) first, so it cannot install the old
        file over the new one; its callers wait for this one. `before_install`
        runs on the trio thread just before the new view is installed, with no
        await in between (`move_refs` after a rename).
        """
        while self._refreshing is not None:
            await self._refreshing.wait()
        self._refreshing = done = trio.Event()
        try:
            while True:  # again if `refresh` installed a newer file meanwhile
                seen = self._sync_installs
                listed = [b for b in self._listed_blobs() if b[2] != unlinked_blob]
                cat, gone = await trio.to_thread.run_sync(
                    self._reread, listed, limiter=self.io_limiter
                )
                if seen == self._sync_installs:
                    break
            if before_install is not None:
                before_install()
            if cat is not None:
                self._install(cat, kernel_updated, gone=gone)
        finally:
            self._refreshing = None
            done.set()

    def _reread(
        self, listed: list[tuple[int, str, Digest]]
    ) -> tuple[catalog_mod.Catalog | None, set[tuple[int, str]]]:
        """The catalog and the blobs of `listed` now gone (blocking: a worker thread's job,
        or the import area's synchronous refresh)."""
        return self._read_catalog(), self._gone_blobs(listed)

    def _read_catalog(self) -> catalog_mod.Catalog | None:
        try:
            return catalog_mod.build(self.source)
        except OcifsError as exc:
            if self.source.index_changed():
                # rewritten while it was read (skopeo writes it in place): read it
                # again at the next check rather than report a half-written file
                log.debug("index.json changed while it was read: %s", exc)
                return None
            log_mod.once(
                log,
                logging.ERROR,
                f"index.json changed but cannot be used (keeping the previous view): {exc}",
            )
            return None

    def _install(
        self,
        cat: catalog_mod.Catalog,
        kernel_updated: frozenset[tuple[str, ...]] = frozenset(),
        *,
        gone: set[tuple[int, str]],
    ) -> None:
        old = self.catalog
        self.catalog = cat
        self._apply_catalog(cat, initial=False)
        self._invalidate_changed_refs(old, cat, kernel_updated)
        self._blobs_changed(gone)

    def _blobs_changed(self, gone: set[tuple[int, str]]) -> None:
        """Blobs may have come or gone: retry failed ones, relist blobs/, drop `gone`."""
        self.blob_access.forget_failures()
        self.layers.forget_failures()
        for node in self._incomplete:
            node.reset()
            self.invalidate(node.inode, None)
        self._incomplete.clear()
        for alg_dir in self._blob_algs.values():
            alg_dir.reset()
            self.invalidate(alg_dir.inode, None)
        # blobs removed by `ocifs gc`, `rm` or another mount: drop their dentries
        # (cached for a day, blob files being immutable)
        for parent, name in gone:
            self.invalidate(parent, name)

    def _listed_blobs(self) -> list[tuple[int, str, Digest]]:
        """(directory inode, name, digest) of every blob file `blobs/` has listed so far."""
        return [
            (alg_dir.inode, name, blob.digest)
            for alg_dir in self._blob_algs.values()
            for name, blob in (alg_dir._children or {}).items()
            if isinstance(blob, BlobFile)
        ]

    def _gone_blobs(self, listed: list[tuple[int, str, Digest]]) -> set[tuple[int, str]]:
        """Those of `listed` whose file is gone: one stat each (a worker thread's job)."""
        return {(parent, name) for parent, name, digest in listed
                if self.source.blob_size(digest) is None}

    def _apply_catalog(self, cat: catalog_mod.Catalog, *, initial: bool) -> None:
        index_file = self.index_file
        if index_file.data != cat.index_bytes:
            index_file.mtime_ns = time.time_ns()
            index_file.content.update(cat.index_bytes, self.kernel, ROOT_INODE, "index.json")
            # the retired number keeps answering (open descriptors, fstat)
            index_file.inode = index_file.content.inode
            self._register(index_file)
        # refs/: one directory per ref-name prefix; a prefix that is itself a ref
        # is also that image's directory. Deepest first, so children exist.
        below: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {(): {}}
        for path in cat.refs:
            for depth in range(1, len(path) + 1):
                below.setdefault(path[:depth], {})
                below[path[: depth - 1]][path[depth - 1]] = path[:depth]
        built: dict[tuple[str, ...], DirNode] = {(): self.refs}
        for path in sorted(below, key=len, reverse=True):
            children: Children = {name: built[sub] for name, sub in below[path].items()}
            if path:
                built[path] = self._refs_dir(path, cat.refs.get(path), children, initial)
            else:
                self.refs.set_children(children)
        self.refs_paths = {node.inode: path for path, node in built.items()}
        if not initial:
            self.by_digest.reset()
            self.invalidate(self.refs.inode, None)

    def move_refs(self, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        """The kernel moved the dentry refs/<old> to refs/<new> (a rename it asked us
        for): keep the inodes it knows under their new paths, and drop the entries
        it cached inside them (descriptor.json now names the new ref). Call just
        before installing the new index.json (`reload(before_install=...)`)."""
        for path in sorted(p for p in self._refs_dirs if p[: len(old)] == old):
            node = self._refs_dirs.pop(path)
            self._refs_dirs[(*new, *path[len(old) :])] = node
            for name in node._children or {}:
                self.invalidate(node.inode, name)

    def _invalidate_changed_refs(
        self,
        old: catalog_mod.Catalog,
        new: catalog_mod.Catalog,
        skip: frozenset[tuple[str, ...]],
    ) -> None:
        """Invalidate the dentries of refs that appeared, vanished or point elsewhere,
        and of the directories above them that appeared or vanished — not every
        name under refs/ (2,000 refs: 2,000 notifications per change otherwise)."""
        old_dirs = {p[:d] for p in old.refs for d in range(1, len(p) + 1)}
        new_dirs = {p[:d] for p in new.refs for d in range(1, len(p) + 1)}
        changed = {
            p
            for p in old.refs.keys() | new.refs.keys()
            if (a := old.refs.get(p)) is None or (b := new.refs.get(p)) is None or a.raw != b.raw
        }
        targets = set(changed - skip) | ((old_dirs ^ new_dirs) - skip)
        for path in sorted(targets):
            parent = self._refs_dirs.get(path[:-1])
            if parent is not None:
                self.invalidate(parent.inode, path[-1])

    def _refs_dir(
        self, path: tuple[str, ...], desc: Descriptor | None, children: Children, initial: bool
    ) -> DirNode:
        """`refs/<path>`: deeper ref names below it, and the image if `path` is a ref."""
        old = self._refs_dirs.get(path)
        inode = old.inode if old is not None else self.alloc_inode()
        if desc is None:
            node = DirNode(
                inode, children=children, mutable=True, perm=self._edit_perm, owner=self._edit_owner
            )
        else:
            image = self._image_dir(("refs", *path), desc)

            async def build() -> Children:
                merged = dict(await image.children())
                for name, child in children.items():
                    if name in merged:
                        full, parent = "/".join((*path, name)), "/".join(path)
                        log_mod.once(
                            log,
                            logging.WARNING,
                            f"ref {full!r} clashes with the file {name!r} of ref {parent!r}; "
                            "it is only under by-digest/",
                        )
                        continue
                    merged[name] = child
                return merged

            node = DirNode(inode, build, mutable=True, perm=self._edit_perm, owner=self._edit_owner)
        self._refs_dirs[path] = node
        self.nodes[inode] = node
        return node

    async def _build_by_digest(self) -> Children:
        found = await trio.to_thread.run_sync(
            catalog_mod.reachable, self.source, self.catalog, limiter=self.io_limiter
        )
        return {str(d): self._image_dir(("by-digest",), desc) for d, desc in sorted(found.items())}

    def _image_dir(self, where: tuple[str, ...], desc: Descriptor) -> DirNode:
        """The directory of the manifest or index at a place that outlives refreshes
        (`refs/<name>`, `by-digest/`): kept per (place, digest) so its inode is stable."""
        key = ("/".join(where), desc.digest)
        node = self._image_dirs.get(key)
        if node is None:
            # image.tar under refs/ carries the ref's name; by-digest/ exports are unnamed
            names = export.names_of(desc.annotations) if where[0] == "refs" else {}
            node = self._image_dirs[key] = self._new_image_dir(desc, names)
        return node

    def _new_image_dir(self, desc: Descriptor, names: dict[str, str], depth: int = 0) -> DirNode:
        """A directory has one parent: every place gets its own node.

        `names` are the ref names its image.tar carries; `depth` counts
        `platforms/` levels above it (0: a ref or by-digest entry).
        """
        node = DirNode(self.alloc_inode())
        node.set_builder(lambda: self._image_children(desc, node, names, depth))
        return node

    async def _image_children(
        self, desc: Descriptor, node: DirNode, names: dict[str, str], depth: int
    ) -> Children:
        if depth > MAX_PLATFORM_DEPTH:
            reason = (
                f"{desc.digest}: more than {MAX_PLATFORM_DEPTH} levels of indexes under "
                "platforms/ (not shown)"
            )
            log_mod.once(log, logging.WARNING, reason)
            raise TooDeep(reason)
        kind = documents.kind_of(desc.media_type)
        doc_name = {"index": "index.json", "manifest": "manifest.json", "schema1": "manifest.json"}
        children: Children = {
            doc_name.get(kind, "blob"): self.blob_file(desc.digest, desc.size),
            "descriptor.json": BytesFile(self.alloc_inode(), self._descriptor_json(desc)),
        }
        try:
            data = await trio.to_thread.run_sync(
                self.documents.read, self.source, desc, limiter=self.io_limiter
            )
            self._add_document_children(desc, data, kind, names, depth, children)
        except OcifsError as exc:
            # One line in the log (once) and the same line inside the mount: a user
            # browsing the tree learns why there is no rootfs/ or platforms/ here.
            level = logging.ERROR if isinstance(exc, BlobUnavailable) else logging.WARNING
            if isinstance(exc, Unmounting):  # not the document's fault: stopped by the unmount
                level = logging.INFO
            shown = ", ".join(sorted(children))
            log_mod.once(
                log, level, f"{exc} (only {shown} and {ERROR_FILE} are shown)", cause=str(exc)
            )
            children[ERROR_FILE] = BytesFile(self.alloc_inode(), f"{exc}\n".encode())
            if isinstance(exc, BlobUnavailable):
                self._incomplete.add(node)  # a later import may supply the blob
            return children
        if kind in ("index", "manifest"):
            children["image.tar"] = await self._export_file(desc, node, names)
        return children

    async def _export_file(
        self, desc: Descriptor, node: DirNode, names: dict[str, str]
    ) -> ExportFile:
        """`image.tar` of an image or index directory (`ocifs.export`)."""
        try:
            layout = await trio.to_thread.run_sync(
                export.plan, self.source, desc, names, self.documents.read,
                limiter=self.export_limiter,
            )
        except OcifsError as exc:
            reason = f"image.tar of {desc.digest}: {exc}"
            log_mod.once(log, logging.ERROR, f"{reason} (reading it fails with EIO)")
            self._incomplete.add(node)
            return ExportFile(self.alloc_inode(), self.blob_access, None, reason)
        return ExportFile(self.alloc_inode(), self.blob_access, layout)

    def _add_document_children(
        self,
        desc: Descriptor,
        data: bytes,
        kind: str,
        names: dict[str, str],
        depth: int,
        children: Children,
    ) -> None:
        """platforms/ of an index; config.json, layers/ and rootfs/ of a manifest."""
        where = f"{kind} {desc.digest}"
        if kind == "index":
            index = documents.parse_index(data, where, lenient=True)
            self._check_media_type(desc, index.own_media_type)
            children["platforms"] = self._platforms_dir(index, desc.digest, names, depth + 1)
        elif kind == "manifest":
            manifest = documents.parse_manifest(data, where)
            self._check_media_type(desc, manifest.own_media_type)
            children["config.json"] = self.blob_file(manifest.config.digest, manifest.config.size)
            children["layers"] = self._layers_dir(manifest.layers)
            if manifest.is_image:
                children["rootfs"] = layertree.rootfs_root(self, manifest)
        elif kind == "schema1":
            raise Unsupported(
                f"manifest {desc.digest}: a Docker schema 1 manifest (unsupported schema 1); "
                "shown raw as manifest.json"
            )
        else:
            log.info("%s: media type %s is not a manifest or index", desc.digest, desc.media_type)

    @staticmethod
    def _check_media_type(desc: Descriptor, own: object) -> None:
        """Warn (once) when a document calls itself something else than its descriptor does."""
        if own is not None and own != desc.media_type:
            log_mod.once(
                log,
                logging.WARNING,
                f"{desc.digest}: the descriptor says mediaType {desc.media_type!r} but the "
                f"document says {own!r}; shown as the descriptor says",
            )

    def _descriptor_json(self, desc: Descriptor) -> bytes:
        raw = (
            dict(desc.raw)
            if desc.raw
            else {
                "mediaType": desc.media_type,
                "digest": str(desc.digest),
                "size": desc.size,
            }
        )
        if self.source.synthesized(desc.digest):
            raw["ocifs.synthesized"] = (
                "this manifest does not exist in the archive; ocifs synthesized it "
                "from the docker-save manifest.json and the image config"
            )
        text = json.dumps(raw, indent=2, ensure_ascii=False) + "\n"
        try:
            return text.encode()
        except UnicodeEncodeError:  # lone surrogates (JSON "\udcff"): keep them as escapes
            return (json.dumps(raw, indent=2) + "\n").encode()

    def _platforms_dir(
        self, index: documents.Index, index_digest: Digest, names: dict[str, str], depth: int
    ) -> DirNode:
        children: Children = {}
        for desc in index.manifests:
            name = platform_dir(desc.platform, desc.digest.hex)
            if name in children:
                name = f"{name}-{desc.digest.hex[:12]}"
            problem = name_problem(name)
            if problem is not None:
                if (index_digest, name) in self._warned_names:
                    continue  # the same index seen from another place: said once
                self._warned_names.add((index_digest, name))
                log.warning(
                    "index %s: platform directory name %r %s; %s is only under by-digest/",
                    index_digest, name, problem, desc.digest,
                )
                continue
            children[name] = self._new_image_dir(desc, names, depth)
        return DirNode(self.alloc_inode(), children=children)

    def _layers_dir(self, layers: list[Descriptor]) -> DirNode:
        children: Children = {}
        for n, desc in enumerate(layers):
            compression = mt.layer_compression(desc.media_type)
            children[f"{n}{compression.value}"] = self.blob_file(desc.digest, desc.size)
            if compression is not mt.Compression.UNKNOWN:
                children[str(n)] = layertree.layer_root(self, desc, n)
        return DirNode(self.alloc_inode(), children=children)

    # ----- blobs/ ------------------------------------------------------------

    def _blob_lister(self, alg: str) -> Callable[[], Awaitable[Children]]:
        def sizes() -> list[tuple[Digest, int]]:
            found = []
            for digest in self.source.list_blobs():
                if digest.algorithm == alg:
                    size = self.source.blob_size(digest)
                    if size is not None:
                        found.append((digest, size))
            return found

        async def build() -> Children:
            found = await trio.to_thread.run_sync(sizes, limiter=self.io_limiter)
            return {digest.hex: self.blob_file(digest, size) for digest, size in found}

        return build

"""Removing and renaming in a writable layout mount, outside `.import/`.

* ``rmdir refs/<name>`` untags, although the directory shows the image: its
  content is the image, which stays (blobs/) until ``ocifs gc``. A nested ref
  (``refs/a/b``) untags only that name; directories left without a ref vanish.
  ``rmdir`` of a directory that only groups refs (``refs/docker.io``) is
  ENOTEMPTY: many refs are never removed by one call.
* ``mv refs/<a> refs/<b>`` retags ``a`` — and refs nested below it — in one
  index.json rewrite; an existing ref ``b`` is replaced (``mv -T``; plain ``mv``
  moves into an existing directory, i.e. tags ``b/a``). RENAME_NOREPLACE gives
  EEXIST, RENAME_EXCHANGE EINVAL.
* ``rm blobs/<alg>/<hex>`` deletes a blob nothing reaches; a reachable one is
  refused with EBUSY and the ref that reaches it is named in the log and in
  `.import/.status`.
* ``rm -r refs/<name>`` (and any recursive delete that removes the files of a
  directory before the directory): a process that has the image directory
  open and unlinks a file in it is removing that directory. From then on that
  process — only that one — sees the image's subdirectories (``layers/``,
  ``rootfs/``, ``platforms/``) as empty and its unlinks and rmdirs inside are
  accepted without effect; its final ``rmdir refs/<name>`` untags. So ``rm -r``
  untags in a handful of requests, indexes no layer, prints nothing, and if it
  is interrupted before that last rmdir nothing has changed. File managers
  (GIO/Nautilus) try ``rmdir`` first, which untags at once.
* Anything else (a single file of an image, ``layers/``, ``rootfs/``...) is
  EROFS: images are immutable.

Index edits and deletions are blocking (lock, fsync) and run in a worker
thread (`TreeEdits._edit`, shared by the three); the tree then re-reads
index.json in a worker thread too (`Tree.reload`) and installs the new view on
the trio thread, which queues the kernel invalidations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ocifs.errors import (
    AlreadyExists,
    InUse,
    InvalidInput,
    NotEmpty,
    NotFound,
    OcifsError,
    ReadOnly,
    Unsupported,
)
from ocifs.layout import collect, refs
from ocifs.model import digest as digest_mod
from ocifs.model.naming import ref_path
from ocifs.tree.nodes import DirNode
from ocifs.tree.tree import Tree

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

Record = Callable[[str, str, str], None]


@dataclass
class _Removal:
    """A process removing the image directory `root` recursively (see module doc)."""

    root: int
    inside: set[int] = field(default_factory=set)


class TreeEdits:
    """Untag, retag and blob removal for one mount. Runs on the trio thread."""

    def __init__(self, tree: Tree, layout: str, lock_timeout: float, record: Record) -> None:
        self.tree = tree
        self.layout = layout
        self.lock_timeout = lock_timeout
        self.record = record
        self._limiter = trio.CapacityLimiter(1)
        #: (pid, inode) -> how many directory handles that process holds on it
        self._open_dirs: dict[tuple[int, int], int] = {}
        self._removals: dict[int, list[_Removal]] = {}

    def accepts_edits(self, inode: int) -> bool:
        """Whether entries of this directory can be removed or renamed (what `access`
        says to file managers): `blobs/<alg>/`, `refs/` and the directories under it
        that hold refs — not the inside of an image (its own files are read-only)."""
        if inode in self.tree.blob_alg_dirs:
            return True
        path = self.tree.refs_paths.get(inode)
        if path is None:
            return False
        return path not in self.tree.catalog.refs or any(
            p[:-1] == path for p in self.tree.refs_paths.values() if p
        )

    # -- directory handles (for recursive deletes) ----------------------------

    def opened_dir(self, pid: int, inode: int) -> bool:
        """Record an opendir; False if this process must see the directory as empty."""
        key = (pid, inode)
        self._open_dirs[key] = self._open_dirs.get(key, 0) + 1
        return not self._removing(pid, inode)

    def closed_dir(self, pid: int, inode: int) -> None:
        key = (pid, inode)
        left = self._open_dirs.get(key, 0) - 1
        if left > 0:
            self._open_dirs[key] = left
        else:
            self._open_dirs.pop(key, None)
            if not any(p == pid for p, _ in self._open_dirs):
                self._removals.pop(pid, None)  # its recursive delete is over

    def _removing(self, pid: int, inode: int) -> bool:
        return any(inode == r.root or inode in r.inside for r in self._removals.get(pid, ()))

    async def _start_removal(self, pid: int, root: DirNode, path: tuple[str, ...]) -> None:
        children = await root.children()
        nested = {p[-1] for p in self.tree.refs_paths.values() if p[:-1] == path and p}
        inside = {
            child.inode
            for name, child in children.items()
            if name not in nested and isinstance(child, DirNode)
        }
        self._removals.setdefault(pid, []).append(_Removal(root.inode, inside))
        log.info("refs/%s: being removed recursively by process %d", "/".join(path), pid)

    # -- operations -----------------------------------------------------------

    async def unlink(self, parent: int, name: str, pid: int) -> None:
        alg = self.tree.blob_alg_dirs.get(parent)
        if alg is not None:
            await self._remove_blob(alg, name)
            return
        if self._removing(pid, parent):
            return
        path = self.tree.refs_paths.get(parent)
        if path and path in self.tree.catalog.refs and (pid, parent) in self._open_dirs:
            node = self.tree.get(parent)
            assert isinstance(node, DirNode)
            await self._start_removal(pid, node, path)
            return
        raise ReadOnly(f"{name}: read-only (rmdir refs/<name> untags an image)")

    async def rmdir(self, parent: int, name: str, pid: int) -> None:
        path = self.tree.refs_paths.get(parent)
        target = (*path, name) if path is not None else None
        if target is not None and target in self.tree.catalog.refs:
            await self._untag(target, pid)
            return
        if target is not None and target in self.tree.refs_paths.values():
            raise NotEmpty(f"refs/{'/'.join(target)}: holds refs (remove them one by one)")
        if self._removing(pid, parent):
            return
        raise ReadOnly(f"{name}: read-only")

    async def rename(
        self, parent: int, name: str, new_parent: int, new_name: str, flags: int
    ) -> None:
        old_dir = self.tree.refs_paths.get(parent)
        new_dir = self.tree.refs_paths.get(new_parent)
        if old_dir is None or new_dir is None:
            raise ReadOnly(f"{name}: read-only (only refs/ can be renamed)")
        old, new = (*old_dir, name), (*new_dir, new_name)
        if old not in self.tree.refs_paths.values():
            raise ReadOnly(f"refs/{'/'.join(old)}: read-only (only refs can be renamed)")
        if flags & RENAME_EXCHANGE:
            raise InvalidInput("exchanging two refs is not supported")
        if ref_path("/".join(new)) != new:
            raise InvalidInput(f"refs/{'/'.join(new)}: not a valid ref name")
        if new_dir in self.tree.catalog.refs:
            image = self.tree.get(new_parent)
            existing = await image.children()
            nested = {p[-1] for p in self.tree.refs_paths.values() if p[:-1] == new_dir and p}
            if new_name in existing and new_name not in nested:
                raise AlreadyExists(f"refs/{'/'.join(new)}: a file of the image is there")
        shown_old, shown_new = "/".join(old), "/".join(new)
        moved_paths = self._moved_paths(old, new)

        def work() -> int:
            return refs.retag(
                self.layout,
                old,
                new,
                replace=not flags & RENAME_NOREPLACE,
                lock_timeout=self.lock_timeout,
            )

        moved = await self._edit(
            work,
            f"refs/{shown_old}",
            f"retag as {shown_new}",
            record_not_found=True,
            before_install=lambda: self.tree.move_refs(old, new),
            kernel_updated=moved_paths,
        )
        self.record("OK", f"refs/{shown_old}", f"retagged as {shown_new} ({_entries(moved)})")

    # -- the index and blob edits ----------------------------------------------

    async def _edit(
        self,
        work: Callable[[], int],
        where: str,
        action: str,
        *,
        record_not_found: bool = False,
        before_install: Callable[[], None] | None = None,
        kernel_updated: frozenset[tuple[str, ...]] = frozenset(),
        unlinked_blob: digest_mod.Digest | None = None,
    ) -> int:
        """Run one blocking index.json or blob edit (`work`) in a worker thread, then
        reload the tree (also in a worker thread, `Tree.reload`).

        A failure is recorded in `.import/.status` (`where`: `action`: reason) and
        re-raised; a refused removal (`InUse`) changed nothing and is not reloaded
        for; NotFound (someone else was faster) is recorded only if asked.
        `before_install` adjusts the tree to what the kernel did itself (a rename),
        just before the new index.json is installed.
        """
        try:
            result = await trio.to_thread.run_sync(work, limiter=self._limiter)
        except InUse as exc:
            self.record("FAILED", where, f"{action} refused: {exc}")
            raise
        except (OcifsError, OSError) as exc:
            if record_not_found or not isinstance(exc, NotFound):
                self.record("FAILED", where, f"{action}: {exc}")
            await self.tree.reload()
            raise
        await self.tree.reload(kernel_updated, unlinked_blob, before_install)
        return result

    def _moved_paths(
        self, old: tuple[str, ...], new: tuple[str, ...]
    ) -> frozenset[tuple[str, ...]]:
        """Every refs/ path the kernel moves or replaces along with the dentry `old` ->
        `new` (call before the edit): those under `old`, where they land, and those
        under `new` that are replaced."""
        paths = set(self.tree.refs_paths.values())
        olds = {p for p in paths if p[: len(old)] == old}
        news = {(*new, *p[len(old) :]) for p in olds} | {p for p in paths if p[: len(new)] == new}
        return frozenset(olds | news | {new})

    async def _untag(self, target: tuple[str, ...], pid: int) -> None:
        shown = "/".join(target)
        inode = next((i for i, p in self.tree.refs_paths.items() if p == target), None)

        def work() -> int:
            return refs.untag(self.layout, target, self.lock_timeout)

        removed = await self._edit(
            work, f"refs/{shown}", "untag", kernel_updated=frozenset({target})
        )
        left = [r for r in self._removals.get(pid, []) if r.root != inode]
        if left:
            self._removals[pid] = left
        else:
            self._removals.pop(pid, None)
        self.record("OK", f"refs/{shown}",
                    f"untagged ({_entries(removed)}; blobs stay until ocifs gc)")

    async def _remove_blob(self, alg: str, name: str) -> None:
        where = f"blobs/{alg}/{name}"
        try:
            digest = digest_mod.from_parts(alg, name)
        except (InvalidInput, Unsupported):
            raise NotFound(f"{where}: not a blob name") from None

        def work() -> int:
            return collect.remove_blob(self.layout, digest, self.lock_timeout)

        size = await self._edit(work, where, "rm", unlinked_blob=digest)
        self.record("OK", where, f"removed ({size} bytes)")



def _entries(n: int) -> str:
    return f"{n} index.json entr{'y' if n == 1 else 'ies'}"

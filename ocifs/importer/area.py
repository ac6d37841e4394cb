"""`.import/`: the writable corner of a layout mount (implements `ImportArea`).

The directory tree under `.import/` is virtual and lives in memory for the
mount's lifetime: `mkdir` creates directories (so `cp -r`, `tar -x` and
`rsync -r` can recreate a layout's shape), files are `Ingest`s that import what
is written to them (see `ocifs.importer.classify` for what a path means). After
an import completes, its file stays listed (reading it gives the committed
blob's bytes) until removed, so tools that set times or modes after close work.

Operations inside `.import/`:

* ``mkdir``: allowed anywhere (``blobs/<alg>`` must name sha256 or sha512);
* ``rm``: removes the name; a file still being imported is aborted (its
  staging removed). Nothing committed to the layout is ever deleted;
* ``rmdir``: empty directories only;
* ``mv`` inside `.import/`: renames; a committed file moved to a meaningful
  name is re-interpreted (``mv .x.tmp blobs/sha256/<hex>`` checks the digest,
  ``mv .tmp index.json`` merges it, ``mv m.json refs/app`` tags it) — this is
  how `rsync`'s temp-file-then-rename works;
* ``ln``, ``ln -s``: not offered by the area (the adapter refuses them);
* ``.status``, ``.errors`` and ``.pending``: read-only reports (see
  `ocifs.importer.status`); they change as imports finish, following the rule
  of `ocifs.tree.kernelcache` so readers always see them whole and current.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ocifs.errors import IsADirectory, NotADirectory, NotFound
from ocifs.importer import classify, staging
from ocifs.importer.classify import Kind
from ocifs.importer.session import Session
from ocifs.tree.attr import IMPORT_INODE_BASE, Attr
from ocifs.tree.kernelcache import ChangingFile, KernelCache, OpenVersion

if TYPE_CHECKING:
    from ocifs.importer.ingest import Ingest

STATUS_FILES = (".status", ".errors", ".pending")


def _ingest(session: Session, path: tuple[str, ...], role: classify.Role) -> Ingest:
    """A new Ingest; its module (decoders, the archive reader) loads with the first
    file written, not with every mount of a layout."""
    from ocifs.importer.ingest import Ingest

    return Ingest(session, path, role)


@dataclass(eq=False)
class _Node:
    inode: int
    name: str
    parent: _Dir | None
    mtime_ns: int = field(default_factory=time.time_ns)

    def path(self) -> tuple[str, ...]:
        parts: list[str] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return tuple(reversed(parts))


@dataclass(eq=False)
class _Dir(_Node):
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass(eq=False)
class _File(_Node):
    ingest: Ingest | None = None
    writers: int = 0


@dataclass(eq=False)
class _Report(_Node):
    render: Callable[[], bytes] = bytes
    content: ChangingFile | None = None


@dataclass
class _Handle:
    node: _Node
    write: bool
    version: OpenVersion | None = None
    pid: int = 0  # the process that opened it (0: unknown)


def recover(layout_path: str) -> list[str]:
    """Remove stale staging files left by a crash; call once at mount time."""
    return staging.recover(layout_path)


class ImportDir:
    """The `.import/` area of a writable layout mount. See the module docstring."""

    def __init__(
        self,
        layout_path: str,
        on_change: Callable[[], None],
        *,
        lock_timeout: float = 30.0,
        ref_wait: float = 30.0,
    ) -> None:
        self.session = Session(layout_path, on_change, lock_timeout, ref_wait)
        self._inodes = itertools.count(IMPORT_INODE_BASE + 1)
        self.root_inode = IMPORT_INODE_BASE
        self._root = _Dir(self.root_inode, ".import", None)
        self._nodes: dict[int, _Node] = {self.root_inode: self._root}
        self._handles: dict[int, _Handle] = {}
        self._fhs = itertools.count(1)
        self._uid, self._gid = os.getuid(), os.getgid()
        self.kernel = KernelCache()
        status = self.session.status
        renders = (status.status_text, status.errors_text, status.pending_text)
        for name, render in zip(STATUS_FILES, renders, strict=True):
            inode = next(self._inodes)
            content = ChangingFile(inode, render(), lambda: next(self._inodes))
            self._add(self._root, _Report(inode, name, self._root, render=render, content=content))
        status.on_change = self._reports_changed
        # refs/ exists from the start, so `cp manifest.json .import/refs/app` works as
        # the README shows it; nested names need their parents (`mkdir -p`) first.
        self._add(self._root, _Dir(next(self._inodes), "refs", self._root))

    # -- helpers --------------------------------------------------------------

    def owns(self, inode: int) -> bool:
        return inode >= IMPORT_INODE_BASE

    def _add(self, parent: _Dir, node: _Node) -> _Node:
        parent.children[node.name] = node
        parent.mtime_ns = time.time_ns()
        self._nodes[node.inode] = node
        return node

    def _reports_changed(self) -> None:
        """A status line was added or a pending entry changed: update the reports now
        (appends reach `tail -f` at once; other changes get a new inode)."""
        for name in STATUS_FILES:
            node = self._root.children[name]
            assert isinstance(node, _Report) and node.content is not None
            before = node.content.data
            if node.content.update(node.render(), self.kernel, self.root_inode, name):
                node.inode = node.content.inode
                self._nodes[node.inode] = node  # the retired number keeps answering
            if node.content.data is not before:
                node.mtime_ns = time.time_ns()

    def _drop(self, node: _Node) -> None:
        if node.parent is not None:
            node.parent.children.pop(node.name, None)
            node.parent.mtime_ns = time.time_ns()
        self._nodes.pop(node.inode, None)

    def _node(self, inode: int) -> _Node:
        node = self._nodes.get(inode)
        if node is None:
            raise NotFound(f".import: inode {inode} no longer exists")
        return node

    def _dir(self, inode: int) -> _Dir:
        node = self._node(inode)
        if not isinstance(node, _Dir):
            raise NotADirectory(f".import/{'/'.join(node.path())}: not a directory")
        return node

    def _attr(self, node: _Node) -> Attr:
        if isinstance(node, _Dir):
            return Attr(node.inode, stat.S_IFDIR | 0o755, 0, 2, self._uid, self._gid,
                        node.mtime_ns, mutable=True)
        if isinstance(node, _Report):
            assert node.content is not None
            return Attr(node.inode, stat.S_IFREG | 0o444, len(node.content.data), 1, self._uid,
                        self._gid, node.mtime_ns, mutable=True, changing=True)
        assert isinstance(node, _File)
        size = node.ingest.size if node.ingest else 0
        return Attr(node.inode, stat.S_IFREG | 0o644, size, 1, self._uid, self._gid,
                    node.mtime_ns, mutable=True)

    def _handle(self, fh: int) -> _Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "stale file handle")
        return handle

    async def _new_ingest(self, node: _File) -> Ingest:
        old, path = node.ingest, node.path()
        fresh = node.ingest = _ingest(self.session, path, classify.role_of(path))
        if old is not None and old.state == "held":
            # a temporary rewritten before it was renamed; unreachable from the node
            # before the await, so no other request can discard it a second time
            await old.discard_off_loop()
        return fresh

    def _open_handle(self, node: _Node, write: bool, pid: int = 0) -> int:
        fh = next(self._fhs)
        if write and pid:
            pid = thread_group(pid)  # FUSE gives the thread; its process is what exits
        version = OpenVersion(node.content) if isinstance(node, _Report) and node.content else None
        self._handles[fh] = _Handle(node, write, version, pid)
        if write and isinstance(node, _File):
            node.writers += 1
            assert node.ingest is not None
            self.session.active.add(node.ingest)
        return fh

    # -- ImportArea -----------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Attr:
        node = self._dir(parent).children.get(name)
        if node is None:
            raise NotFound(f".import/{name}: no such file")
        return self._attr(node)

    async def getattr(self, inode: int) -> Attr:
        node = self._node(inode)
        if isinstance(node, _File) and node.writers and node.ingest and node.ingest.failure:
            # The kernel asks getattr before each write() (writeback cache): this
            # is how a writer learns, at its next write(), why its import failed.
            raise node.ingest.failure
        return self._attr(node)

    async def readdir(self, inode: int) -> list[tuple[str, Attr]]:
        d = self._dir(inode)
        return [(name, self._attr(node)) for name, node in d.children.items()]

    async def mkdir(self, parent: int, name: str, mode: int) -> Attr:
        d = self._dir(parent)
        if name in d.children:
            raise FileExistsError(errno.EEXIST, f".import/{name}: exists")
        node = _Dir(next(self._inodes), name, d)
        classify.check_mkdir(node.path())
        return self._attr(self._add(d, node))

    async def create(
        self, parent: int, name: str, mode: int, flags: int, pid: int = 0
    ) -> tuple[int, Attr]:
        d = self._dir(parent)
        old = d.children.get(name)
        if isinstance(old, (_Dir, _Report)):
            raise FileExistsError(errno.EEXIST, f".import/{name}: exists")
        if isinstance(old, _File) and old.writers:
            # Another writer raced us to create it: share the file, as a disk would.
            return self._open_handle(old, True, pid), self._attr(old)
        node = _File(next(self._inodes), name, d)
        path = node.path()
        role = classify.role_of(path)  # a bad digest name fails here, before any data
        if old is not None:
            await self._remove_file(old)
        self._add(d, node)
        node.ingest = _ingest(self.session, path, role)
        return self._open_handle(node, True, pid), self._attr(node)

    async def open(self, inode: int, flags: int, pid: int = 0) -> int:
        node = self._node(inode)
        if isinstance(node, _Dir):
            raise IsADirectory(f".import/{'/'.join(node.path())}: is a directory")
        write = (flags & os.O_ACCMODE) != os.O_RDONLY
        if isinstance(node, _Report):
            if write:
                raise PermissionError(errno.EACCES, f".import/{node.name}: read-only")
            return self._open_handle(node, False)
        assert isinstance(node, _File)
        if write and (node.ingest is None or node.writers == 0):
            finished = node.ingest is not None and node.ingest.state in ("done", "held")
            if not finished or flags & os.O_TRUNC:
                await self._new_ingest(node)  # rewriting from the start (cp): a new import
            # else: opened to change a finished file in place: nothing happens unless
            # it writes or truncates, which imports the changed content anew
        return self._open_handle(node, write, pid)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handle(fh)
        node = handle.node
        if handle.version is not None:
            return handle.version.read(offset, size)
        if isinstance(node, _File) and node.ingest is not None:
            return await node.ingest.read(offset, size)
        return b""

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        node = self._handle(fh).node
        if not isinstance(node, _File) or node.ingest is None:
            raise PermissionError(errno.EBADF, "not open for writing")
        ingest = node.ingest
        failed = ingest.failure is not None
        await ingest.write(offset, data)
        if not failed and ingest.failure is not None:
            self.kernel.attrs(node.inode)  # so the writer's next write() asks getattr
        node.mtime_ns = time.time_ns()
        return len(data)

    async def flush(self, fh: int) -> None:
        handle = self._handle(fh)
        node = handle.node
        if handle.write and isinstance(node, _File) and node.ingest is not None:
            # a reader's close must not commit what a writer has sent so far
            if handle.pid and process_exiting(handle.pid):
                node.ingest.writer_exited = True
            await node.ingest.flush(shared=node.writers > 1)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None or not handle.write or not isinstance(handle.node, _File):
            return
        node = handle.node
        node.writers -= 1
        if node.writers == 0 and node.ingest is not None:
            self.session.active.discard(node.ingest)
            await node.ingest.release()

    async def setattr(self, inode: int, size: int | None, fh: int | None) -> Attr:
        node = self._node(inode)
        if size is not None:
            if not isinstance(node, _File):
                raise PermissionError(errno.EPERM, f".import/{node.name}: cannot truncate")
            ingest = node.ingest
            if ingest is not None and node.writers == 0 and ingest.state in ("done", "held"):
                raise _finished(node)  # without a descriptor no close() would commit it
            if ingest is None or (node.writers == 0 and ingest.state != "open"):
                ingest = await self._new_ingest(node)
            await ingest.truncate(size)
        return self._attr(node)

    async def _remove_file(self, node: _Node) -> None:
        if isinstance(node, _File) and node.ingest is not None:
            self.session.active.discard(node.ingest)
            await node.ingest.abort()
        self._drop(node)

    async def unlink(self, parent: int, name: str) -> None:
        node = self._dir(parent).children.get(name)
        if node is None:
            raise NotFound(f".import/{name}: no such file")
        if isinstance(node, _Dir):
            raise IsADirectory(f".import/{name}: is a directory")
        if isinstance(node, _Report):
            raise PermissionError(errno.EPERM, f".import/{name}: cannot be removed")
        await self._remove_file(node)

    async def rmdir(self, parent: int, name: str) -> None:
        node = self._dir(parent).children.get(name)
        if node is None:
            raise NotFound(f".import/{name}: no such directory")
        if not isinstance(node, _Dir):
            raise NotADirectory(f".import/{name}: not a directory")
        if node.children:
            raise OSError(errno.ENOTEMPTY, f".import/{name}: directory not empty")
        self._drop(node)

    async def rename(self, parent: int, name: str, new_parent: int, new_name: str) -> None:
        src_dir, dst_dir = self._dir(parent), self._dir(new_parent)
        node = src_dir.children.get(name)
        if node is None:
            raise NotFound(f".import/{name}: no such file")
        if isinstance(node, _Report):
            raise PermissionError(errno.EPERM, f".import/{name}: cannot be renamed")
        if isinstance(node, _Dir) and _is_within(dst_dir, node):
            raise OSError(errno.EINVAL, "cannot move a directory into itself")
        target = dst_dir.children.get(new_name)
        if isinstance(target, _Report) or (isinstance(target, _Dir) and target.children):
            raise OSError(errno.ENOTEMPTY if isinstance(target, _Dir) else errno.EPERM,
                          f".import/{new_name}: cannot be replaced")
        new_path = (*dst_dir.path(), new_name)
        if isinstance(node, _File) and node.ingest is not None:
            if node.ingest.state == "held":
                await self._import_temporary(node, new_path)
            elif node.ingest.state == "done":
                await self._reinterpret(node, new_path)
            elif node.ingest.temporary and node.ingest.state == "open":
                self._rename_open_temporary(node.ingest, new_path)
        if target is not None and target is not node:
            await self._remove_file(target)
        src_dir.children.pop(name, None)
        node.name, node.parent = new_name, dst_dir
        dst_dir.children[new_name] = node
        src_dir.mtime_ns = dst_dir.mtime_ns = time.time_ns()

    @staticmethod
    def _rename_open_temporary(ingest: Ingest, new_path: tuple[str, ...]) -> None:
        """A temporary renamed while still open: an unnamed real name just makes it
        an ordinary import (of a plain blob: its head was not sniffed); a name
        with a meaning has to wait until it is closed."""
        role = classify.role_of(new_path)
        if role.kind is Kind.AUTO and new_path[-1].startswith("."):
            ingest.path = new_path
        elif role.kind is Kind.AUTO:
            ingest.path, ingest.temporary = new_path, False
        else:
            raise OSError(errno.EBUSY, f".import/{'/'.join(new_path)}: the file is still "
                          "being written; rename it once it is closed")

    async def _import_temporary(self, node: _File, new_path: tuple[str, ...]) -> None:
        """A temporary renamed to its real name (GIO, rsync, editors): import it now,
        under that name. If that fails, the rename fails and nothing is committed."""
        held = node.ingest
        assert held is not None
        fresh = _ingest(self.session, new_path, classify.role_of(new_path))
        if fresh.temporary:
            held.path = new_path  # still a temporary name: keep holding
            return
        try:
            await held.replay_into(fresh)
            await fresh.flush()
        finally:
            await fresh.release()
        node.ingest = fresh
        await held.discard_off_loop()

    async def _reinterpret(self, node: _File, new_path: tuple[str, ...]) -> None:
        """A finished file moved to a name with a meaning gets that meaning now."""
        old = node.ingest
        assert old is not None
        role = classify.role_of(new_path)
        if role.kind is Kind.AUTO or old.committed is None or old.mode != "blob":
            return
        fresh = _ingest(self.session, new_path, role)
        fresh.committed = old.committed
        fresh.state = "done"
        await fresh.truncate(old.size)  # reopens from the committed blob
        try:
            await fresh.flush()
        finally:
            await fresh.release()
        node.ingest = fresh

    def close(self) -> None:
        """Unmount: abort ingests still open (staging removed), log abandoned entries.

        Called once `trio.run` has returned (serve.py): no request is served any
        more, so waiting here for direct writes in flight delays only the exit,
        and keeps the promise that an unmount leaves no staging behind.
        """
        for node in list(self._nodes.values()):
            if isinstance(node, _File) and node.ingest is not None:
                node.ingest.state = "aborted"
                node.ingest.discard()
        self._handles.clear()
        self.session.abandon_pending()
        staging.remove_if_unused(self.session.layout)


def _finished(node: _File) -> PermissionError:
    return PermissionError(
        errno.EPERM,
        f".import/{'/'.join(node.path())}: a finished import cannot be truncated by "
        "name; open it (truncate -s, or write it again as cp does) to import new content",
    )


#: PF_EXITING in /proc/<pid>/stat's flags: the task is in do_exit().
_PF_EXITING = 0x4


def thread_group(tid: int) -> int:
    """The process (thread group id) of thread `tid`, or `tid` if unknown."""
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return tid


def process_exiting(pid: int) -> bool:
    """Whether process `pid` is exiting (or gone): its descriptors are being closed
    by the kernel (killed, or exited without closing), not by the writer itself."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return True
    try:
        return bool(int(fields[6]) & _PF_EXITING) or fields[0] in (b"Z", b"X")
    except (IndexError, ValueError):
        return False


def _is_within(node: _Node, ancestor: _Dir) -> bool:
    cur: _Node | None = node
    while cur is not None:
        if cur is ancestor:
            return True
        cur = cur.parent
    return False

"""The thin pyfuse3 adapter: tree calls in, FUSE replies out, typed errors to errno.

Nothing else in ocifs imports pyfuse3 (except `mount.py`, which starts the
loop). Immutable nodes get long kernel cache timeouts and `keep_cache`, so a
second `stat` or `cat` of image content never reaches Python; mutable nodes
(refs/, by-digest/, blobs/ listings, .import/) get a short timeout and explicit
invalidation when they change. A name missing from a directory whose listing is
final is answered as a negative entry the kernel keeps (`lookup`); `..` of
listings follows the kernel's lookup counts (`forget`, ocifs.dirparents). Files
whose content changes (index.json, .import/.status...) follow
`ocifs.tree.kernelcache` (timeout 0, direct_io, a new inode per rewrite,
appends pushed). Notifications go out from one task
(`run_invalidations`), never from a request handler, with one exception made
safe by construction: `open` pushes a small layer file's bytes into the page
cache when no handle of it is open (`_push`). A mount without `.import/`
answers FLUSH with ENOSYS, so the kernel stops sending it. No exception
escapes a handler: an unexpected one is logged with its traceback and becomes
EIO, because pyfuse3 would otherwise end the whole mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from ocifs import errors, fastloop, heap
from ocifs.dirparents import DirParents
from ocifs.tree import permissions, space
from ocifs.tree.attr import IMPORT_INODE_BASE, ROOT_INODE, Attr
from ocifs.tree.edits import TreeEdits
from ocifs.tree.importarea import ImportArea
from ocifs.tree.kernelcache import KernelCache, OpenVersion
from ocifs.tree.nodes import (
    VIRTUAL_XATTR_PREFIX,
    BytesFile,
    ChangingBytesFile,
    DirNode,
    GeneratedFile,
    Node,
)
from ocifs.tree.tree import Tree

log = logging.getLogger(__name__)

#: Kernel cache lifetime of content-addressed nodes: they never change.
IMMUTABLE_TIMEOUT = 24 * 3600.0
#: Lifetime of entries that follow index.json (changes are also invalidated).
MUTABLE_TIMEOUT = 1.0
#: Lifetime of files whose content changes (index.json, .import/.status): none, so
#: every path lookup asks, and a changed file is found under its new inode number
#: (see ocifs.tree.kernelcache: the writeback cache pins a regular file's size).
CHANGING_FILE_TIMEOUT = 0.0
#: Longest a close() in .import/ waits for its notifications to be sent.
BARRIER_TIMEOUT = 2.0


def _push_limit() -> int:
    """OCIFS_PUSH_LIMIT (bytes; 0 turns pushing off), for measuring; default 256 KiB."""
    text = os.environ.get("OCIFS_PUSH_LIMIT", "")
    return int(text) if text.isdigit() else 256 << 10


#: Largest file whose bytes `open` stores in the kernel's page cache (`_push`):
#: most files of an image are smaller, and a file opened only for its first bytes
#: costs at most this much copying.
PUSH_LIMIT = _push_limit()

#: Reported block size of files: `cp` and `cat` size their buffers from it.
BLKSIZE = 1 << 20
#: Reported block size of directories. glibc's opendir() sizes its getdents
#: buffer from it, the kernel asks for that many bytes per READDIRPLUS, and
#: pyfuse3 calloc()s a reply buffer of that size for every request: 1 MiB made
#: a third of a `find`'s daemon time page faults and (un)mapping.
DIR_BLKSIZE = 4096
IMPORT_NAME = ".import"
#: seconds a read-only mount's statfs figures are reused (file managers ask often)
SPACE_TIMEOUT = 60.0
#: the same for a writable layout's filesystem, whose free space imports change:
#: file managers ask once per directory they show (955 for one folder), which
#: without this was a worker-thread round trip each
WRITABLE_SPACE_TIMEOUT = 1.0
#: xattrs ocifs has no notion of beyond showing what a layer stored. When a node
#: lacks one the answer is "not supported" (as from a filesystem without SELinux
#: labels or ACLs), not "no such attribute": `ls -l` then stops asking for every
#: file (coreutils remembers per st_dev), instead of two FUSE requests per entry.
NOT_SUPPORTED_WHEN_ABSENT = frozenset(
    {b"security.selinux", b"system.posix_acl_access", b"system.posix_acl_default"}
)

_ERRNO: list[tuple[type[errors.OcifsError], int]] = [
    (errors.NotFound, errno.ENOENT),
    (errors.NotADirectory, errno.ENOTDIR),
    (errors.IsADirectory, errno.EISDIR),
    (errors.ReadOnly, errno.EROFS),
    (errors.BlobUnavailable, errno.EIO),
    (errors.DigestMismatch, errno.EBADMSG),
    (errors.SizeMismatch, errno.EBADMSG),
    (errors.Unsupported, errno.EOPNOTSUPP),
    (errors.InvalidInput, errno.EINVAL),
    (errors.LimitExceeded, errno.EFBIG),
    (errors.NameTooLong, errno.ENAMETOOLONG),
    (errors.LockTimeout, errno.EBUSY),
    (errors.InUse, errno.EBUSY),
    (errors.NotEmpty, errno.ENOTEMPTY),
    (errors.AlreadyExists, errno.EEXIST),
    (errors.TooDeep, errno.ELOOP),
]

P = ParamSpec("P")
R = TypeVar("R")


def errno_of(exc: BaseException) -> int:
    """The errno a typed error (or host OSError) becomes at the FUSE edge."""
    if isinstance(exc, OSError):
        return exc.errno or errno.EIO
    for kind, number in _ERRNO:
        if isinstance(exc, kind):
            return number
    return errno.EIO


def _edge(func: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Map typed errors to FUSEError; log and contain anything unexpected."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (errors.OcifsError, OSError) as exc:
            number = errno_of(exc)
            if number not in (errno.ENOENT, errno.EROFS):
                log.debug("%s: %s -> %s", func.__name__, exc, errno.errorcode.get(number))
            raise pyfuse3.FUSEError(number) from None
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("internal error in %s; answering EIO", func.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def entry_attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = attr.inode
    e.generation = 0
    if not attr.mutable:
        timeout = IMMUTABLE_TIMEOUT
    elif attr.changing:
        timeout = CHANGING_FILE_TIMEOUT
    else:
        timeout = MUTABLE_TIMEOUT
    e.entry_timeout = timeout
    e.attr_timeout = timeout
    e.st_mode = attr.mode
    e.st_nlink = attr.nlink
    e.st_uid = attr.uid
    e.st_gid = attr.gid
    e.st_rdev = attr.rdev
    e.st_size = attr.size
    e.st_blksize = DIR_BLKSIZE if stat.S_ISDIR(attr.mode) else BLKSIZE
    e.st_blocks = (attr.size + 511) // 512
    e.st_atime_ns = attr.mtime_ns
    e.st_mtime_ns = attr.mtime_ns
    e.st_ctime_ns = attr.mtime_ns
    return e


def _negative_entry() -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = 0
    e.entry_timeout = IMMUTABLE_TIMEOUT
    return e


#: a lookup's "no such name, and there never will be" (see Operations.lookup)
_NEGATIVE_ENTRY = _negative_entry()


Notification = tuple[str, int, bytes | None, int]
"""(kind, inode, name or stored data, offset): "entry", "inode", "attrs" or "store"."""


class QueuedKernelCache(KernelCache):
    """Queues notifications for `Operations.run_invalidations` (never sent inline)."""

    def __init__(self) -> None:
        self.channel: trio.MemorySendChannel[Notification] | None = None
        self.queued = 0
        self.sent = 0
        self._progress = trio.Event()

    def _queue(self, item: Notification) -> None:
        if self.channel is None:
            return
        try:
            self.channel.send_nowait(item)
            self.queued += 1
        except trio.WouldBlock:
            log.debug("invalidation queue full; relying on short timeouts")
        except trio.BrokenResourceError:
            pass  # run_invalidations has ended: unmounting, nothing left to invalidate

    def mark_sent(self) -> None:
        self.sent += 1
        self._progress.set()
        self._progress = trio.Event()

    async def barrier(self) -> None:
        """Wait until what was queued so far has been sent, so the reply of the
        current request (close() of an import) comes after the kernel knows
        what changed. Only from handlers that hold no kernel lock the
        notifications need (flush, release), and never for long."""
        target = self.queued
        with trio.move_on_after(BARRIER_TIMEOUT):
            while self.sent < target and self.channel is not None:
                await self._progress.wait()

    def entry(self, parent: int, name: str) -> None:
        self._queue(("entry", parent, os.fsencode(name), 0))

    def inode(self, inode: int) -> None:
        self._queue(("inode", inode, None, 0))

    def attrs(self, inode: int) -> None:
        self._queue(("attrs", inode, None, 0))

    def store(self, inode: int, offset: int, data: bytes) -> None:
        self._queue(("store", inode, data, offset))


def _notify(kind: str, inode: int, payload: bytes | None, offset: int) -> None:
    """Send one notification (worker thread: the kernel may block the sender)."""
    if kind in ("inode", "attrs"):
        pyfuse3.invalidate_inode(inode, kind == "attrs")
    elif kind == "store":
        assert payload is not None
        pyfuse3.notify_store(inode, offset, payload)


class Operations(pyfuse3.Operations):
    """pyfuse3 handlers over a `Tree` and, for layouts, an `ImportArea`."""

    supports_dot_lookup = False

    def __init__(
        self, tree: Tree, import_area: ImportArea | None = None, edits: TreeEdits | None = None
    ) -> None:
        super().__init__()
        self.tree = tree
        self.area = import_area
        self.edits = edits
        # The writeback cache batches `.import/` writes into 1 MiB requests
        # (BASELINES §4: 352 -> 512 MiB/s); read-only content is unaffected.
        self.enable_writeback_cache = import_area is not None
        if import_area is not None:
            heap.keep_large_buffers()  # 1 MiB write buffers reused, not faulted in anew
        self._next_fh = 1
        self._files: dict[int, Node] = {}
        self._versions: dict[int, OpenVersion] = {}
        self._area_fhs: dict[int, int] = {}
        #: inode -> handles of it in `_files` (`_push` only when none)
        self._opened: dict[int, int] = {}
        #: inodes whose bytes `_push` stored in the kernel's page cache
        self._pushed: set[int] = set()
        self._push_limit = PUSH_LIMIT
        #: fh -> (directory inode, its listing with `.` and `..`)
        self._dirs: dict[int, tuple[int, list[tuple[bytes, Attr]]]] = {}
        self._dir_owner: dict[int, tuple[int, int]] = {}  # fh -> (pid, inode), for edits
        #: parents of the directories the kernel holds, for `..` entries
        self.parents = DirParents()
        self._space: tuple[float, pyfuse3.StatvfsData] | None = None
        self.kernel = QueuedKernelCache()
        tree.kernel = self.kernel
        if import_area is not None:
            import_area.kernel = self.kernel

    # ----- plumbing ------------------------------------------------------

    def _fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _in_area(self, inode: int) -> bool:
        return self.area is not None and inode >= IMPORT_INODE_BASE

    async def run_invalidations(self) -> None:
        """Send queued kernel notifications outside of request handlers.

        pyfuse3: invalidating from a request handler can deadlock (the kernel
        may wait for that request); with the writeback cache invalidate_inode
        may block, so it and notify_store run in a worker thread, and entries
        go through pyfuse3's own invalidation thread.
        """
        send, receive = trio.open_memory_channel[Notification](10_000)
        self.kernel.channel = send
        async with receive:
            async for kind, inode, payload, offset in receive:
                try:
                    if kind == "entry":
                        assert payload is not None
                        pyfuse3.invalidate_entry_async(inode, payload, ignore_enoent=True)
                    else:
                        # abandoned at unmount: a notification the kernel holds up
                        # must not keep the daemon from exiting
                        await trio.to_thread.run_sync(
                            _notify, kind, inode, payload, offset, abandon_on_cancel=True
                        )
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTCONN):
                        log.debug("kernel %s notification for %s failed: %s", kind, inode, exc)
                finally:
                    self.kernel.mark_sent()

    async def watch_outside_changes(self, interval: float = 1.0) -> None:
        """Notice index.json rewritten, or blobs removed, by another process (skopeo,
        a second mount, `ocifs gc`) even when nobody looks, so cached refs/ and
        blobs/ entries are dropped promptly."""
        while True:
            await trio.sleep(interval)
            try:
                await self.tree.maybe_refresh(self.tree.blobs)
            except Exception:
                log.exception("checking index.json for outside changes failed")

    # ----- lookups and attributes ----------------------------------------

    @_edge
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        sname = os.fsdecode(name)
        log.debug("lookup parent=%d name=%r", parent_inode, name)
        if self.area is not None and parent_inode == ROOT_INODE and sname == IMPORT_NAME:
            attr = await self.area.getattr(self.area.root_inode)
        elif self._in_area(parent_inode):
            assert self.area is not None
            attr = await self.area.lookup(parent_inode, sname)
        else:
            try:
                attr = (await self.tree.lookup(parent_inode, sname)).attr()
            except errors.NoSuchName as exc:
                if not exc.final:
                    raise
                # The kernel remembers the absence (file managers probe every
                # directory for .hidden, .Trash, .directory ...): inode 0 is a
                # negative entry kept for entry_timeout.
                return _NEGATIVE_ENTRY
        if attr.is_dir:
            self.parents.seen(attr.inode, parent_inode)
        return entry_attributes(attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """The kernel dropped inodes: their `..` bookkeeping goes (must not raise:
        pyfuse3 has no request to answer with an error)."""
        try:
            for inode, count in inode_list:
                self.parents.forget(inode, count)
                # the kernel's inode (and its page cache) is gone: push again
                self._pushed.discard(inode)
        except Exception:
            log.exception("internal error in forget")
        log.debug("forget %d inodes; %d directories known", len(inode_list), len(self.parents))

    @_edge
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        log.debug("getattr inode=%d", inode)
        if self._in_area(inode):
            assert self.area is not None
            return entry_attributes(await self.area.getattr(inode))
        node = self.tree.get(inode)
        if node.mutable:
            await self.tree.maybe_refresh()
        return entry_attributes(node.attr())

    @_edge
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(self.tree.get(inode).readlink())

    # ----- directories ---------------------------------------------------

    @_edge
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        fh = self._fh()
        if self._in_area(inode):
            assert self.area is not None
            listing = await self.area.readdir(inode)
        elif self.edits is not None and not self._track_dir(fh, ctx.pid, inode):
            listing = []  # inside an image this process is removing recursively (edits.py)
        else:
            children = await self.tree.listdir(inode)
            listing = [(name, node.attr()) for name, node in children.items()]
            if inode == ROOT_INODE and self.area is not None:
                listing.append((IMPORT_NAME, await self.area.getattr(self.area.root_inode)))
        dots = [(".", await self._attr_of(inode)), ("..", await self._parent_attr(inode))]
        self._dirs[fh] = (
            inode,
            [(os.fsencode(name), attr) for name, attr in dots + sorted(listing)],
        )
        return fh

    async def _attr_of(self, inode: int) -> Attr:
        if self._in_area(inode):
            assert self.area is not None
            return await self.area.getattr(inode)
        return self.tree.get(inode).attr()

    async def _parent_attr(self, inode: int) -> Attr:
        """`..` of a directory: its parent as last seen in a lookup or listing.

        The kernel resolves `..` itself; the entry is for tools that expect it
        in listings, so a parent not seen yet is shown as the directory itself.
        """
        parent = ROOT_INODE if inode == ROOT_INODE else (self.parents.parent(inode) or inode)
        try:
            return await self._attr_of(parent)
        except errors.OcifsError:
            return await self._attr_of(inode)

    @_edge
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inode, listing = self._dirs[fh]
        parents = self.parents
        for i in range(start_id, len(listing)):
            name, attr = listing[i]
            if not pyfuse3.readdir_reply(token, name, entry_attributes(attr), i + 1):
                break
            # READDIRPLUS hands the kernel every entry but `.` and `..` (items 0, 1)
            if i > 1 and attr.is_dir:
                parents.seen(attr.inode, inode)

    def _track_dir(self, fh: int, pid: int, inode: int) -> bool:
        """Note who opened a directory; False if that process must see it empty."""
        assert self.edits is not None
        self._dir_owner[fh] = (pid, inode)
        return self.edits.opened_dir(pid, inode)

    @_edge
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
        owner = self._dir_owner.pop(fh, None)
        if owner is not None and self.edits is not None:
            self.edits.closed_dir(*owner)

    # ----- files -----------------------------------------------------------

    @_edge
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if self._in_area(inode):
            assert self.area is not None
            area_fh = await self.area.open(inode, flags, ctx.pid)
            fh = self._fh()
            self._area_fhs[fh] = area_fh
            # Status files change size as imports finish: direct_io makes the kernel
            # ask us for the bytes instead of trusting a cached size.
            reading = flags & os.O_ACCMODE == os.O_RDONLY
            return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=reading)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise errors.ReadOnly("read-only")
        node = self.tree.get(inode)
        if isinstance(node, DirNode):  # (only DirNodes have children; no attr() built)
            raise errors.IsADirectory("is a directory")
        node.check_open()
        fh = self._fh()
        if isinstance(node, ChangingBytesFile):
            # The kernel's size of this inode may be older than its content (see
            # ocifs.tree.kernelcache): direct_io reads are not cut at that size.
            await self.tree.maybe_refresh()
            self._versions[fh] = node.open_version()
            return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=True)
        if isinstance(node, GeneratedFile):
            # one snapshot per open, read past whatever size stat showed
            self._files[fh] = BytesFile(node.inode, await node.snapshot())
            return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=True)
        self._files[fh] = node
        inode = node.inode
        opened = self._opened.get(inode, 0)
        self._opened[inode] = opened + 1
        if (
            not opened
            and self._push_limit
            and inode not in self._pushed
            and not node.mutable
            and not flags & os.O_DIRECT  # its reads bypass the page cache
        ):
            self._push(inode, node)
        return pyfuse3.FileInfo(fh=fh, keep_cache=not node.mutable)

    def _push(self, inode: int, node: Node) -> None:
        """Store a small immutable file's bytes in the kernel's page cache before
        answering its OPEN, so its reads never reach the daemon (one to three READ
        round trips fewer per file; docs/layers.md "FUSE requests per file").

        Only from the first open with no other handle of the inode open here: a
        READ in flight holds its pages locked until we answer, and `notify_store`
        from this (the only) thread would wait for those locks forever. With no
        handle open none can be in flight (the kernel sends RELEASE only after a
        file's last read). Only bytes `ready_content` has without blocking; any
        other case is left to READ.
        """
        try:
            data = node.ready_content(self._push_limit)
        except Exception:  # a bug, but only an optimisation failed: the open stands
            log.exception("pushing inode %d into the page cache failed", inode)
            return
        if data is None:
            return
        try:
            pyfuse3.notify_store(inode, 0, data)
        except OSError as exc:
            log.debug("notify_store of inode %d failed: %s", inode, exc)
            if exc.errno == errno.ENOSYS:  # a kernel without it: stop trying
                self._push_limit = 0
            return
        self._pushed.add(inode)

    @_edge
    async def read(self, fh: int, off: int, size: int) -> bytes:
        node = self._files.get(fh)
        log.debug("read fh=%d inode=%s off=%d size=%d", fh, node and node.inode, off, size)
        if node is not None:
            return await node.read(off, size)
        version = self._versions.get(fh)
        if version is not None:
            return version.read(off, size)
        assert self.area is not None
        return await self.area.read(self._area_fhs[fh], off, size)

    @_edge
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if fh in self._files or fh in self._versions or self.area is None:
            raise errors.ReadOnly("read-only")
        fastloop.quiet()
        return await self.area.write(self._area_fhs[fh], off, buf)

    @_edge
    async def flush(self, fh: int) -> None:
        """Imports verify and commit here (docs/durability.md). A mount without
        `.import/` has nothing to flush: ENOSYS makes the kernel set `no_flush`
        for the whole mount, so no later close() sends a FLUSH (one request per
        file fewer for scripts that read many files; docs/layers.md)."""
        if self.area is None:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if fh in self._area_fhs:
            assert self.area is not None
            try:
                await self.area.flush(self._area_fhs[fh])
            finally:
                await self.kernel.barrier()

    @_edge
    async def release(self, fh: int) -> None:
        node = self._files.pop(fh, None)
        if node is not None:
            inode = node.inode
            left = self._opened.get(inode, 1) - 1
            if left:
                self._opened[inode] = left
            else:
                self._opened.pop(inode, None)
            return
        if self._versions.pop(fh, None) is not None:
            return
        area_fh = self._area_fhs.pop(fh, None)
        if area_fh is not None:
            assert self.area is not None
            try:
                await self.area.release(area_fh)
            finally:
                await self.kernel.barrier()

    @_edge
    async def fsync(self, fh: int, datasync: bool) -> None:
        if fh in self._area_fhs:
            assert self.area is not None
            await self.area.flush(self._area_fhs[fh])

    # ----- xattrs and statfs ---------------------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if inode >= IMPORT_INODE_BASE and self.area is not None:
            # `.import/` has no xattrs. The kernel asks for security.capability
            # before every write() there (docs/import.md: it cannot be told to
            # stop with libfuse 3.14), so this answer comes first and costs the
            # least: no wrapper, no lookup.
            absent = errno.EOPNOTSUPP if name in NOT_SUPPORTED_WHEN_ABSENT else errno.ENODATA
            raise pyfuse3.FUSEError(absent)
        return await self._tree_xattr(inode, name)

    @_edge
    async def _tree_xattr(self, inode: int, name: bytes) -> bytes:
        node = self.tree.get(inode)
        key = os.fsdecode(name)
        value = None
        # `ls -l` asks every file for SELinux labels and ACLs: build the
        # virtual attributes only when one of their names is asked for
        if key.startswith(VIRTUAL_XATTR_PREFIX):
            value = node.virtual_xattrs().get(key)
        if value is None:
            value = node.xattrs().get(key)
        if value is None:
            absent = errno.EOPNOTSUPP if name in NOT_SUPPORTED_WHEN_ABSENT else errno.ENODATA
            raise pyfuse3.FUSEError(absent)
        return value

    @_edge
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if self._in_area(inode):
            return []
        # Virtual attributes (user.ocifs.layer) are answered but not listed, so
        # copying tools (cp -a, rsync -X, tar --xattrs) take only the image's own.
        node = self.tree.get(inode)
        names = node.xattrs()
        if not names:
            return []
        virtual = node.virtual_xattrs()
        return [os.fsencode(name) for name in names if name not in virtual]

    @_edge
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """Cached for a while: file managers ask for every directory they show."""
        now = trio.current_time()
        writable = self.area is not None
        timeout = WRITABLE_SPACE_TIMEOUT if writable else SPACE_TIMEOUT
        if self._space is not None and now - self._space[0] <= timeout:
            return self._space[1]
        measure = space.of_layout_filesystem if writable else space.of_read_only_image
        figures = await trio.to_thread.run_sync(measure, self.tree.source.path)
        s = pyfuse3.StatvfsData()
        s.f_bsize, s.f_frsize = figures.bsize, figures.frsize
        s.f_blocks, s.f_bfree, s.f_bavail = figures.blocks, figures.bfree, figures.bavail
        s.f_files, s.f_ffree, s.f_favail = figures.files, figures.ffree, figures.favail
        s.f_namemax = 255
        self._space = (trio.current_time(), s)
        log.debug("statfs measured")
        return s

    @_edge
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        """What `access(2)`, `test -w` and file managers are told (docs/permissions.md).

        Only asked without `default_permissions` (no `-o allow_other`). Writing
        is possible inside `.import/` only; everywhere else the answer is EROFS,
        as from a read-only mount, so GIO shows no write, delete or trash action
        for files that cannot be changed, even to root.
        """
        attr = await self._attr_of(inode)
        return permissions.allowed(attr.mode, mode, writable=self._writable(inode, attr))

    def _writable(self, inode: int, attr: Attr) -> bool:
        """Whether writes in or to this node can succeed (what `access(W_OK)` says).

        Only `.import/` accepts writes. A directory where `unlink`, `rmdir` or
        `rename` succeed must answer True here too, or file managers will not
        offer those actions there: `refs/` and its directories of refs (untag,
        retag) and `blobs/<alg>/` (blob deletion), see `TreeEdits.accepts_edits`.
        """
        if self._in_area(inode):
            return bool(attr.mode & 0o222)
        return self.edits is not None and self.edits.accepts_edits(inode)

    # ----- writes: only inside .import/ ----------------------------------

    def _area_for(self, parent_inode: int) -> ImportArea:
        if self.area is None or not self._in_area(parent_inode):
            raise errors.ReadOnly("read-only outside .import/")
        return self.area

    @_edge
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        area = self._area_for(parent_inode)
        area_fh, attr = await area.create(parent_inode, os.fsdecode(name), mode, flags, ctx.pid)
        fh = self._fh()
        self._area_fhs[fh] = area_fh
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), entry_attributes(attr)

    @_edge
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        area = self._area_for(parent_inode)
        attr = await area.mkdir(parent_inode, os.fsdecode(name), mode)
        self.parents.seen(attr.inode, parent_inode)
        return entry_attributes(attr)

    @_edge
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        if not self._in_area(inode):
            raise errors.ReadOnly("read-only")
        assert self.area is not None
        size = attr.st_size if fields.update_size else None
        area_fh = self._area_fhs.get(fh) if fh is not None else None
        return entry_attributes(await self.area.setattr(inode, size, area_fh))

    def _edits(self) -> TreeEdits:
        if self.edits is None:
            raise errors.ReadOnly("read-only")
        return self.edits

    @_edge
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if self._in_area(parent_inode):
            await self._area_for(parent_inode).unlink(parent_inode, os.fsdecode(name))
        else:
            await self._edits().unlink(parent_inode, os.fsdecode(name), ctx.pid)

    @_edge
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if self._in_area(parent_inode):
            await self._area_for(parent_inode).rmdir(parent_inode, os.fsdecode(name))
        elif parent_inode == ROOT_INODE and name == IMPORT_NAME.encode():
            raise errors.ReadOnly(".import: cannot be removed")
        else:
            await self._edits().rmdir(parent_inode, os.fsdecode(name), ctx.pid)

    @_edge
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        if not self._in_area(parent_inode_old) and not self._in_area(parent_inode_new):
            await self._edits().rename(
                parent_inode_old,
                os.fsdecode(name_old),
                parent_inode_new,
                os.fsdecode(name_new),
                flags,
            )
            return
        area = self._area_for(parent_inode_old)
        self._area_for(parent_inode_new)
        await area.rename(
            parent_inode_old, os.fsdecode(name_old), parent_inode_new, os.fsdecode(name_new)
        )

    @_edge
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if self._in_area(parent_inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        raise errors.ReadOnly("read-only")

    @_edge
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if self._in_area(parent_inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        raise errors.ReadOnly("read-only")

    @_edge
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if self._in_area(new_parent_inode):
            raise pyfuse3.FUSEError(errno.EPERM)
        raise errors.ReadOnly("read-only")

    @_edge
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise errors.ReadOnly("read-only")

    @_edge
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise errors.ReadOnly("read-only")

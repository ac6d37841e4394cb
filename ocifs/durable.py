"""Every durability-relevant syscall ocifs makes: fsync, rename, flock, atomic replace.

Keeping them here gives one place to audit the ordering (docs/durability.md) and
one place to hook test-only faults:

* ``OCIFS_TEST_CRASH_AT=<step>`` kills the process with SIGKILL just before
  ``<step>`` (see `STEPS`), to test crash consistency deterministically;
* ``OCIFS_TEST_FAIL_AT=<step>:<ERRNO>`` makes ``<step>`` raise ``OSError(ERRNO)``
  instead (ENOSPC, EIO, ...), to test fault handling.

Both are honoured only when ``OCIFS_TEST_MODE=1``, so a stray variable in a
user's environment can never kill a production mount.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ocifs.errors import LockTimeout, NotDurable

#: Named steps where a crash or a fault can be injected, in commit order.
STEPS = (
    "mkdir-dirsync",  # fsync of a directory that gained a subdirectory (makedirs)
    "staging-write",  # a staging file receives data
    "blob-fsync",  # fsync of a staging file before it is renamed into blobs/
    "blob-rename",  # rename staging -> blobs/<alg>/<hex>
    "blob-dirsync",  # fsync of blobs/<alg>/ after the renames
    "index-lock",  # taking the layout lock
    "index-write",  # writing the index.json temp file
    "index-fsync",  # fsync of the index.json temp file
    "index-rename",  # rename temp -> index.json
    "index-dirsync",  # fsync of the layout directory
)
#: Steps of removals and `ocifs init` (the index-* steps above apply to untag/retag too).
REMOVAL_STEPS = (
    "blob-unlink",  # removing an unreferenced blob (rm in blobs/, ocifs gc)
    "blob-unlink-dirsync",  # fsync of blobs/<alg>/ after removals
    "init-write",  # ocifs init: writing oci-layout / index.json
)
#: Steps of the derived-data cache (layer indexes, diff_ids).
CACHE_STEPS = (
    "cache-lock",  # opening the lock file of a cache entry being built (work_lock)
    "diff-id-hash",  # hashing a layer's decompressed stream for its diff_id
    "diff-id-store",  # storing the hashed diff_id in the cache
    "cache-replace",  # renaming a written cache entry's temp file into place (DiskCache.put)
)

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def test_env(name: str) -> str:
    """A test-only setting: empty unless OCIFS_TEST_MODE=1 (so stray variables do nothing)."""
    if os.environ.get("OCIFS_TEST_MODE") != "1":
        return ""
    return os.environ.get(name, "")


def checkpoint(step: str) -> None:
    """Test hook before `step`: crash or fail there if the test environment asks."""
    if test_env("OCIFS_TEST_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
    fail = test_env("OCIFS_TEST_FAIL_AT")
    if fail:
        where, _, code = fail.partition(":")
        if where == step:
            num = getattr(errno, code, None) if not code.isdigit() else int(code)
            num = num if isinstance(num, int) else errno.EIO
            raise OSError(num, f"{os.strerror(num)} (injected at {step})")


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of `data` at `offset` (pwrite may write less than asked)."""
    checkpoint("staging-write")
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range back now, without waiting.

    Large imports would otherwise leave all their dirty pages to the fsync in
    `close()`, which then waits for the whole file (~2 s per GiB on the
    project's disks); started early, writeback overlaps the FUSE transfer.
    POSIX_FADV_DONTNEED starts asynchronous writeback of dirty pages and drops
    only pages already clean. Purely a performance hint: errors are ignored,
    and durability still comes from `fsync_fd`.
    """
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def fsync_fd(fd: int, step: str = "blob-fsync") -> None:
    checkpoint(step)
    os.fsync(fd)


def fsync_dir(path: str, step: str = "blob-dirsync") -> None:
    """fsync a directory so the names created or renamed in it survive power loss."""
    checkpoint(step)
    fd = os.open(path, _OPEN_DIR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename(src: str, dst: str, step: str = "blob-rename") -> None:
    checkpoint(step)
    os.rename(src, dst)


def unlink(path: str, step: str = "blob-unlink") -> None:
    """Remove a file (an unreferenced blob); the caller fsyncs the directory after."""
    checkpoint(step)
    os.unlink(path)


def makedirs(path: str) -> None:
    """Create `path` and missing parents, fsyncing each parent that gained a name."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    makedirs(parent)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return
    fsync_dir(parent, "mkdir-dirsync")


def try_lock(fd: int) -> bool:
    """Take an exclusive flock without waiting; False if another holder has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def open_locked(path: str, flags: int, mode: int = 0o644) -> int:
    """Open (usually create) a file and flock it exclusively at once.

    Staging files are locked for their whole life so `recover` can tell a live
    ingest (locked) from a crash leftover (unlocked).
    """
    fd = os.open(path, flags | os.O_CLOEXEC, mode)
    if not try_lock(fd):
        os.close(fd)
        raise BlockingIOError(errno.EWOULDBLOCK, f"{path}: locked by another process")
    return fd


@contextmanager
def layout_lock_if_free(lock_path: str) -> Iterator[bool]:
    """Hold the layout lock if nobody else does (yields True), else yield False at once.

    For housekeeping that is simply skipped when another process is active.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        yield try_lock(fd)
    finally:
        os.close(fd)


@contextmanager
def layout_lock(lock_path: str, timeout: float) -> Iterator[None]:
    """Hold the layout lock (flock on a dedicated file) around a read-modify-write.

    Waits with exponential backoff up to `timeout` seconds, then raises
    `LockTimeout`. Blocking: call it from a worker thread, never the trio loop.
    flock locks belong to the open file description, so two threads of one
    process exclude each other exactly like two processes do.
    """
    checkpoint("index-lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while not try_lock(fd):
            now = time.monotonic()
            if now >= deadline:
                raise LockTimeout(
                    f"{lock_path}: layout lock held by another process for over {timeout:g} s"
                )
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


@contextmanager
def work_lock(
    lock_path: str, timeout: float, stop: threading.Event | None = None
) -> Iterator[bool]:
    """Hold an flock that says "this work is being done" (building a cache entry).

    Yields True once the lock is held, or False after `timeout` seconds of
    waiting (the caller then does the work itself: a stuck holder must not
    stop this process) or once `stop` is set (unmounting: the caller gives up).
    Blocking: call it from a worker thread.
    """
    checkpoint("cache-lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        held = try_lock(fd)
        while not held and time.monotonic() < deadline:
            pause = min(delay, max(0.0, deadline - time.monotonic()))
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                break
            delay = min(delay * 2, 0.1)
            held = try_lock(fd)
        yield held
    finally:
        os.close(fd)  # releases the flock


def replace_file(path: str, data: bytes, tmp_dir: str, step: str = "index-write") -> None:
    """Atomically replace `path` with `data`: temp file, fsync, rename, fsync dir.

    The temp file lives in `tmp_dir` (same filesystem, locked while it exists)
    so a crash leaves at worst a stale temp there, never a partial `path`.
    """
    tmp = os.path.join(tmp_dir, f"index-{os.getpid()}-{os.urandom(6).hex()}.tmp")
    fd = open_locked(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        checkpoint(step)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fsync_fd(fd, "index-fsync")
        rename(tmp, path, "index-rename")
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(fd)
    try:
        fsync_dir(os.path.dirname(path) or ".", "index-dirsync")
    except OSError as exc:
        raise NotDurable(
            f"committed: {path} was replaced, but the fsync of its directory failed "
            f"({os.strerror(exc.errno) if exc.errno else exc}): the change is visible "
            "and may not survive a crash"
        ) from None

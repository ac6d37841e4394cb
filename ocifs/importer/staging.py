"""Staging files: where imported bytes live until they are verified and committed.

Staging files sit in ``<layout>/.ocifs-staging/`` — the same filesystem as
``blobs/`` (so commit is a rename) but never inside it (so nothing partial is
ever visible as a blob). Each is flock'ed by its creator for its whole life:
`recover` at mount time removes only files nobody holds, so two ocifs processes
on one layout never delete each other's live ingests.

`StagedFile` hashes incrementally while writes arrive in order and remembers
when they did not (holes from sparse `cp`, rewrites, truncation); then the
digest is recomputed from the file at verification time. Appends go through
a `DirectWriter` (O_DIRECT, see `ocifs.importer.directio`); anything else
(a write elsewhere, truncate, a read) first `settle`s it, so the file on
disk holds every byte, and continues with plain writes.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING

from ocifs import durable
from ocifs.importer.directio import ALIGN, DirectWriter

if TYPE_CHECKING:
    from hashlib import _Hash

log = logging.getLogger(__name__)

STAGING_DIR = ".ocifs-staging"
LOCK_FILE = ".ocifs.lock"
#: Files younger than this are removed by `recover` only if the process named in
#: them is gone: a live process may be between creating and locking one.
RECOVER_GRACE_S = 5.0
_CHUNK = 1 << 20


def staging_dir(layout: str) -> str:
    return os.path.join(layout, STAGING_DIR)


def new_staging_path(layout: str, kind: str) -> str:
    return os.path.join(staging_dir(layout), f"{kind}-{os.getpid()}-{os.urandom(8).hex()}")


def _creator_alive(name: str) -> bool:
    """Staging names carry their creator's pid: `<kind>-<pid>-<random>`.

    A zombie counts as dead: it has exited (its locks are gone) and only waits
    for its parent or init to reap it, which some inits do late.
    """
    try:
        pid = int(name.split("-")[1])
    except (IndexError, ValueError):
        return True  # not our naming: be careful
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_if_unused(layout: str) -> None:
    """Remove an empty staging directory, so the layout is left as it was found.

    Taken under the layout lock (without waiting: if another process holds it,
    it is using the directory) because `indexjson.update` creates and uses the
    directory under that lock; ingests that create staging files without the
    lock retry if the directory vanishes (`open_staging`). A directory that is
    not empty belongs to a live ingest of another mount, or to a crash that the
    next mount's `recover` cleans up. The lock file itself stays (documented).
    """
    sdir = staging_dir(layout)
    if not os.path.isdir(sdir):
        return
    try:
        with durable.layout_lock_if_free(os.path.join(layout, LOCK_FILE)) as free:
            if free:
                os.rmdir(sdir)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            log.warning("%s: cannot remove: %s", sdir, exc.strerror)


def open_staging(layout: str, kind: str) -> tuple[str, int]:
    """Create and lock a new staging file: (path, fd).

    The directory is created if missing, and again if another mount's
    `remove_if_unused` removed it in between (it never removes a non-empty one).
    """
    for _attempt in range(10):
        durable.makedirs(staging_dir(layout))
        path = new_staging_path(layout, kind)
        try:
            return path, durable.open_locked(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(errno.ENOENT, f"{staging_dir(layout)}: keeps disappearing")


def recover(layout: str) -> list[str]:
    """Remove stale staging files left by a crash (those no live process has locked).

    The directory itself is removed too if that leaves it empty.
    """
    removed = _remove_stale(layout)
    remove_if_unused(layout)
    return removed


def _remove_stale(layout: str) -> list[str]:
    sdir = staging_dir(layout)
    removed: list[str] = []
    try:
        names = os.listdir(sdir)
    except FileNotFoundError:
        return removed
    now = time.time()
    for name in names:
        path = os.path.join(sdir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            young = now - os.fstat(fd).st_mtime < RECOVER_GRACE_S
            if (young and _creator_alive(name)) or not durable.try_lock(fd):
                continue
            os.unlink(path)
            removed.append(name)
        except OSError as exc:
            log.warning("%s: cannot remove stale staging file: %s", path, exc.strerror)
        finally:
            os.close(fd)
    if removed:
        log.info("%s: removed %d stale staging file(s) left by a crash", sdir, len(removed))
    return removed


#: Sequential staging data is handed to early writeback in chunks of this size.
WRITEBACK_CHUNK = 32 * 1024 * 1024


class StagedFile:
    """One staging file with an incremental hash. Not thread-safe: one user at a time."""

    def __init__(self, layout: str, algorithm: str = "sha256", kind: str = "ingest") -> None:
        self.path, self.fd = open_staging(layout, kind)
        self.algorithm = algorithm
        self.size = 0
        self._hasher: _Hash | None = hashlib.new(algorithm)
        self._hashed = 0
        self._written_back = 0  # bytes handed to early writeback so far
        self._writer: DirectWriter | None = None  # appends not yet all on disk

    @property
    def hashing(self) -> bool:
        """False once a write arrived out of order: the digest then comes from the file."""
        return self._hasher is not None

    @property
    def in_order(self) -> bool:
        """True while every byte so far arrived sequentially (hash is current)."""
        return self._hasher is not None and self._hashed == self.size

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Store bytes (the caller hashes them later with `hash_chunk`, in order)."""
        end = offset + len(data)
        if offset == self.size and (self._writer is not None or offset % ALIGN == 0):
            if self._writer is None:
                self._writer = DirectWriter(self.fd, offset)
            self._writer.append(data)
            self.size = end
            return
        self.settle()
        durable.pwrite_all(self.fd, data, offset)
        if offset != self.size:
            self._hasher = None  # hole or rewrite: hash from the file later
        self.size = max(self.size, end)
        if self.size - self._written_back >= WRITEBACK_CHUNK and self._hasher is not None:
            # Sequential data already hashed or about to be: never read back, so
            # start its writeback now and the final fsync only waits for the tail.
            durable.start_writeback(self.fd, self._written_back, self.size - self._written_back)
            self._written_back = self.size

    def append(self, data: bytes | memoryview) -> None:
        """Write at the end and hash at once (for sequential producers off the trio loop)."""
        self.write(self.size, data)
        self.hash_chunk(data)

    def hash_chunk(self, data: bytes | memoryview) -> None:
        """Feed the incremental hash (worker thread; the trio thread may drop the hasher)."""
        hasher = self._hasher
        if hasher is not None:
            hasher.update(data)
            self._hashed += len(data)

    def settle(self) -> None:
        """Finish the appends in progress: the file then holds every byte written.

        Blocking (waits for the disk): call from a worker thread. Raises the
        first error of those writes.
        """
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.finish()
            self._written_back = self.size  # written by the device already

    def truncate(self, size: int) -> None:
        self.settle()
        os.ftruncate(self.fd, size)
        if size != self.size:
            self._hasher = None
        self.size = size

    def hexdigest(self, algorithm: str | None = None) -> str:
        """Digest of the content; re-reads the file unless the incremental hash is current.

        Blocking (may read the whole file): call from a worker thread.
        """
        algorithm = algorithm or self.algorithm
        if algorithm == self.algorithm and self._hasher is not None and self.in_order:
            return self._hasher.copy().hexdigest()
        self.settle()
        hasher = hashlib.new(algorithm)
        offset = 0
        while offset < self.size:
            chunk = os.pread(self.fd, min(_CHUNK, self.size - offset), offset)
            if not chunk:
                break
            hasher.update(chunk)
            offset += len(chunk)
        if algorithm == self.algorithm:
            self._hasher, self._hashed = hasher.copy(), self.size
        return hasher.hexdigest()

    def pread(self, offset: int, size: int) -> bytes:
        self.settle()
        return os.pread(self.fd, size, offset)

    def read_all(self, limit: int) -> bytes:
        """The whole content, for small JSON documents; `limit` bounds memory."""
        self.settle()
        return os.pread(self.fd, min(self.size, limit + 1), 0)

    def discard(self) -> None:
        """Remove the staging file (abort, failure, or content already present)."""
        if self.fd < 0:
            return
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.abandon()  # its writes in flight must end before the fd is closed
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = -1

    def detach(self) -> None:
        """Close after the file was renamed into blobs/ (the name is no longer ours)."""
        if self.fd >= 0:
            self.settle()
            os.close(self.fd)
            self.fd = -1

"""Persistent cache of derived data (layer indexes, archive member tables, seek points).

Entries are keyed by (kind, key) where key is content-derived (a layer digest, an
archive identity), so an entry is valid forever for that key. Every entry is
written to a temporary file and renamed into place, and starts with a header
that names its kind, its key (the layer digest...) and its format version, and
a sha256 of header and payload: a truncated or corrupt entry, and an entry
that belongs to another key or format (copied over, left by an older ocifs),
is detected on load, deleted and reported as a miss, never served. Raw file
entries (unpacked layer copies) have no header: their users validate them
against CRCs kept in a checked entry (`path_for`).

Total size is kept under a limit by evicting the least recently used entries
(mtime is touched on every hit). The total is counted by walking the cache once
and then kept up to date as entries are added; it is recounted when it would
pass the limit or has not been for `RECOUNT_S` (other processes share the
directory), so adding an entry does not stat every file.

Temporary files (`.tmp-*`, renamed into place when complete) are never counted.
`new_temp` flocks its file for as long as it is open, so the count also removes
the temporaries a dead process left (a download the unmount could not end, a
crash): unlocked and untouched for `STALE_TEMP_S`. The daemon counts once at
mount (`serve`), so a leftover goes at the next mount at the latest.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ocifs import durable

log = logging.getLogger(__name__)

_MAGIC = b"OCIFSCACHE2\n"
_OLD_MAGIC = b"OCIFSCACHE1\n"
_SUM = 32
_NAMES = struct.Struct("<III")  # format version, bytes of kind, bytes of key
_HEADER = len(_MAGIC) + _SUM + _NAMES.size
DEFAULT_LIMIT = 10 * 1024**3
#: recount the cache's size from disk at least this often (seconds)
RECOUNT_S = 60.0
#: how long a process waits for another one building the same entry (seconds)
BUILD_WAIT_S = 600.0
#: an unlocked temporary file untouched this long is a dead process's leftover (seconds);
#: `_write_atomic`'s short-lived temporaries are not locked, so age alone must exclude them
STALE_TEMP_S = 600.0


#: entries are opened so that a FIFO or symlink planted in the cache cannot block or redirect
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _read_regular(path: Path) -> bytes:
    """A cache entry's bytes; OSError if it is not a regular file."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def default_directory() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ocifs"))


class DiskCache:
    """See the module docstring. Thread-safe; methods do blocking I/O."""

    def __init__(self, directory: Path | str, limit_bytes: int = DEFAULT_LIMIT) -> None:
        self.directory = Path(directory)
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._total: int | None = None  # bytes in the cache as last counted, plus additions
        self._counted_at = 0.0

    def _path(self, kind: str, key: str) -> Path:
        safe = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        return self.directory / kind / safe[:2] / safe

    def get(self, kind: str, key: str, *, version: int = 1) -> bytes | None:
        """The payload stored for (kind, key) in format `version`, or None (a miss).

        None too for an absent, corrupt or foreign entry (another key, kind or
        format version), which is deleted so the caller rebuilds it.
        """
        path = self._path(kind, key)
        try:
            blob = _read_regular(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry %s unreadable (%s); rebuilding", path, exc)
            self._discard(path)
            return None
        payload = self._check(path, blob, kind, key, version)
        if payload is None:
            self._discard(path)
            return None
        self._touch(path)
        return payload

    @staticmethod
    def _check(path: Path, blob: bytes, kind: str, key: str, version: int) -> bytes | None:
        """The payload of an entry file if it is intact and is the entry asked for."""
        if blob.startswith(_OLD_MAGIC):
            log.info("cache entry %s has an older format; rebuilding", path)
            return None
        if (
            len(blob) < _HEADER
            or blob[: len(_MAGIC)] != _MAGIC
            or hashlib.sha256(blob[len(_MAGIC) + _SUM :]).digest()
            != blob[len(_MAGIC) : len(_MAGIC) + _SUM]
        ):
            log.warning("cache entry %s is corrupt or truncated; rebuilding", path)
            return None
        got_version, kind_len, key_len = _NAMES.unpack_from(blob, len(_MAGIC) + _SUM)
        start = _HEADER + kind_len + key_len
        got_kind = blob[_HEADER : _HEADER + kind_len]
        got_key = blob[_HEADER + kind_len : start]
        wanted = (version, _encode(kind), _encode(key))
        if (got_version, got_kind, got_key) != wanted:
            log.warning(
                "cache entry %s belongs to %s %r (format %d), not to %s %r (format %d); "
                "rebuilding",
                path,
                got_kind.decode("utf-8", "replace"),
                got_key.decode("utf-8", "replace"),
                got_version,
                kind,
                key,
                version,
            )
            return None
        return blob[start:]

    def put(self, kind: str, key: str, payload: bytes, *, version: int = 1) -> None:
        """Store a payload atomically; failures only cost a rebuild later."""
        path = self._path(kind, key)
        kind_b, key_b = _encode(kind), _encode(key)
        body = _NAMES.pack(version, len(kind_b), len(key_b)) + kind_b + key_b + payload
        data = _MAGIC + hashlib.sha256(body).digest() + body
        try:
            self._write_atomic(path, data)
        except OSError as exc:
            log.warning("could not write cache entry %s: %s", path, exc)
            return
        self._added(len(data))

    @contextmanager
    def building(
        self,
        kind: str,
        key: str,
        timeout: float = BUILD_WAIT_S,
        stop: threading.Event | None = None,
    ) -> Iterator[bool]:
        """Cross-process "I am building (kind, key)": an flock on a lock file.

        Two mounts (two daemons) that need the same missing entry: the first
        builds it, the second waits here and then finds it with `get`. Yields
        whether the lock is held (False after `timeout`: build anyway; or once
        `stop` is set: unmounting). Blocking: call from a worker thread.
        """
        path = self.directory / "locks" / kind / self._path(kind, key).name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create cache lock directory %s: %s", path.parent, exc)
            yield False
            return
        with durable.work_lock(str(path), timeout, stop) as held:
            yield held

    def path_for(self, kind: str, key: str) -> Path:
        """Where a raw file entry for (kind, key) lives (for library-written files).

        Raw entries have no checksum header: their user must validate them on
        load (and call `discard`) — e.g. a library's index import that fails.
        Write them with `commit_file` so a half-written file is never visible.
        """
        return self._path(kind, key)

    def new_temp(self, kind: str) -> tuple[Path, BinaryIO]:
        """A fresh temporary file on the cache's filesystem, open for writing, for `commit_file`.

        It is written through the descriptor `mkstemp` returned: reopening it
        with O_TRUNC makes ext4 flush the whole file when it is closed (its
        auto_da_alloc guard for truncate-and-rewrite), 0.05-0.08 s per 200 MiB
        on the path of a layer's first listing.
        """
        d = self.directory / kind
        d.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=d)
        durable.try_lock(fd)  # "in use" for `evict` until closed (a fresh file: never held)
        return Path(name), os.fdopen(fd, "wb")

    def commit_file(self, temp: Path, kind: str, key: str) -> Path:
        path = self._path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = os.stat(temp).st_size
        os.replace(temp, path)
        self._added(size)
        return path

    def open_file(self, kind: str, key: str, size: int) -> int | None:
        """A read-only fd on the raw entry (kind, key) if it has `size` bytes, else None.

        A wrong size means a damaged or stale entry: it is discarded so the
        caller rebuilds it. A hit counts as a use for eviction.
        """
        path = self._path(kind, key)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            os.close(fd)
            log.warning("cache entry %s has the wrong size; rebuilding", path)
            self._discard(path)
            return None
        self._touch(path)
        return fd

    def touch(self, kind: str, key: str) -> None:
        self._touch(self._path(kind, key))

    def discard(self, kind: str, key: str) -> None:
        self._discard(self._path(kind, key))

    def _added(self, size: int) -> None:
        """Account for a new entry; evict when the total may have passed the limit."""
        with self._lock:
            total = self._total
            fresh = time.monotonic() - self._counted_at < RECOUNT_S
            if total is not None and fresh and total + size <= self.limit_bytes:
                self._total = total + size
                return
        self.evict()

    def used_bytes(self) -> int:
        """Bytes the cache holds, as last counted (counting now if never or long ago)."""
        with self._lock:
            total = self._total
            fresh = time.monotonic() - self._counted_at < RECOUNT_S
        if total is None or not fresh:
            self.evict()
            with self._lock:
                total = self._total
        return total or 0

    def evict(self) -> None:
        """Count the cache on disk; delete least recently used entries until it fits,
        and stale temporary files (module docstring)."""
        with self._lock:
            entries: list[tuple[float, int, Path]] = []
            total = 0
            stale = 0
            self._counted_at = time.monotonic()
            if not self.directory.exists():
                self._total = 0
                return
            for root, dirs, files in os.walk(self.directory):
                if root == str(self.directory) and "locks" in dirs:
                    # building() locks: empty, and deleting one under a holder would let
                    # a second indexer in; never counted, never evicted
                    dirs.remove("locks")
                for name in files:
                    if name.startswith(".tmp-"):
                        stale += self._remove_if_stale(Path(root) / name)
                        continue
                    p = Path(root) / name
                    try:
                        st = p.stat()
                    except OSError:
                        continue
                    entries.append((st.st_mtime, st.st_size, p))
                    total += st.st_size
            if total > self.limit_bytes:
                entries.sort()
                for _mtime, size, p in entries:
                    if total <= self.limit_bytes:
                        break
                    self._discard(p)
                    total -= size
            self._total = total
        if stale:
            log.info("cache %s: removed %d stale temporary file(s)", self.directory, stale)

    def _remove_if_stale(self, path: Path) -> bool:
        """Delete a temporary file no live process holds (its flock) or has written to
        for STALE_TEMP_S; whether it was deleted."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < STALE_TEMP_S:
                return False
            if not durable.try_lock(fd):
                return False  # its writer is alive (a download held by a slow registry)
            path.unlink()  # under our lock: a writer cannot have taken it in between
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            durable.checkpoint("cache-replace")
            os.replace(tmp, path)
        except BaseException:
            self._discard(Path(tmp))
            raise

    @staticmethod
    def _touch(path: Path) -> None:
        try:
            os.utime(path)
        except OSError:
            pass

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove cache entry %s: %s", path, exc)

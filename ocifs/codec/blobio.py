"""Reading a blob's bytes: the interface every layer of ocifs reads through.

`BlobReader` is random access to one blob (a layout file, a tar member, a
registry download, a decompressed stream). The file readers here open only
regular files, in a way that can neither block nor act on a device, and can
tell whether the file changed since it was opened (`FileStamp`). Nothing here
knows about sources, layers or FUSE.
"""

from __future__ import annotations

import io
import os
import stat
from typing import Protocol

from ocifs.errors import NotRegularFile


def file_type(mode: int) -> str:
    """What a non-regular file is, for messages ("a FIFO", "a directory"...)."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "of an unknown file type"


#: flags of every open of a source file: O_NONBLOCK (a FIFO would otherwise wait for
#: a writer, with the daemon's only request thread), O_NOFOLLOW (no symlink followed).
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_regular(path: str) -> tuple[int, os.stat_result]:
    """(fd, fstat) of a regular file, opened so that nothing can block or be triggered.

    `lstat` first, so a FIFO, socket or device is never opened at all (opening
    some devices acts on them), then an `OPEN_FLAGS` open and `fstat` (the file
    may have been swapped in between). Raises FileNotFoundError, NotRegularFile
    (saying what the file is instead) or another OSError.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(f"{path}: is {file_type(st.st_mode)}, not a regular file")
    fd = os.open(path, OPEN_FLAGS)
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(f"{path}: is {file_type(st.st_mode)}, not a regular file")
    return fd, st


class BlobReader(Protocol):
    """Random access to one blob's bytes (or to a decompressed stream)."""

    @property
    def size(self) -> int: ...

    def pread(self, offset: int, size: int) -> bytes:
        """Up to `size` bytes at `offset`; short only at the end. Thread-safe."""
        ...

    def close(self) -> None: ...


class SelfVerifying(Protocol):
    """A BlobReader that checks the blob's digest itself (a registry download hashes
    the bytes it receives), so a pass over it need not hash them a second time.

    `claim_verification()` returns a token (None: hash the bytes yourself). The
    token names the download the reads will be answered from: a reader that reads
    the blob in order from 0 to its end gets every byte only if all of them match
    the digest (the read that reaches the end fails otherwise), and
    `verified(token)` is True once that same download matched. A download that
    failed and was started again under a running pass is another one: the pass
    may hold bytes of both, and `verified` of the first token stays False."""

    def claim_verification(self) -> object | None: ...

    def verified(self, token: object) -> bool: ...


def self_verifying(reader: BlobReader) -> SelfVerifying | None:
    """`reader`, or the reader it wraps (`wrapped`), if it verifies its own digest."""
    seen: object | None = reader
    while seen is not None:
        if hasattr(seen, "claim_verification") and hasattr(seen, "verified"):
            return seen  # type: ignore[return-value]
        seen = getattr(seen, "wrapped", None)
    return None


def pread_cached(fd: int, size: int, offset: int) -> bytes | None:
    """`size` bytes at `offset` if the page cache holds them all, else None.

    `RWF_NOWAIT` makes the read fail (EAGAIN) or come back short instead of
    waiting for the disk: for work that is only worth doing when it is cheap,
    such as pushing a file's bytes into the kernel before anyone asked for them.
    """
    buf = bytearray(size)
    try:
        got = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
    except (BlockingIOError, OSError):
        return None
    return bytes(buf) if got == size else None


def clamp(offset: int, size: int, total: int) -> int:
    """Bytes a read of `size` at `offset` gets from `total` bytes (0: nothing to read).

    Every BlobReader's `pread` answers short at the end and empty past it, as
    `os.pread` does on a file.
    """
    if offset >= total or size <= 0:
        return 0
    return min(size, total - offset)


class FileRegionReader:
    """A region of a real file read with `os.pread`: layout blobs and tar members.

    The file descriptor is shared, never owned: closing the reader does nothing;
    whoever opened the fd closes it.
    """

    __slots__ = ("_size", "fd", "start")

    def __init__(self, fd: int, start: int, size: int) -> None:
        self.fd = fd
        self.start = start
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, size: int) -> bytes:
        size = clamp(offset, size, self._size)
        return os.pread(self.fd, size, self.start + offset) if size else b""

    def pread_if_cached(self, offset: int, size: int) -> bytes | None:
        """`pread`, or None if the bytes are not all in the page cache (no disk wait)."""
        size = clamp(offset, size, self._size)
        return pread_cached(self.fd, size, self.start + offset) if size else b""

    def changed(self) -> bool:
        """Whether the file may have changed since this reader was opened.

        False here; `StampedRegionReader` (layout blob files, members of a plain
        tar archive) compares the file's `fstat` identity with the one at open.
        """
        return False

    def close(self) -> None:
        pass


FileStamp = tuple[int, int, int, int, int]
"""(size, mtime_ns, ctime_ns, inode, device): changes whenever a file's bytes may have.

ctime cannot be set back by the file's owner, so an in-place rewrite that
restores size and mtime still shows.
"""


def stamp_of(st: os.stat_result) -> FileStamp:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def fd_changed(fd: int, stamp: FileStamp) -> bool:
    """Whether the file open as `fd` no longer has the identity `stamp` (one fstat);
    True if it cannot be told."""
    try:
        return stamp_of(os.fstat(fd)) != stamp
    except OSError:
        return True


class StampedRegionReader(FileRegionReader):
    """A region of a file whose identity (`stamp`) at open is known: `changed` is real."""

    __slots__ = ("stamp",)

    def __init__(self, fd: int, start: int, size: int, stamp: FileStamp) -> None:
        super().__init__(fd, start, size)
        self.stamp = stamp

    def changed(self) -> bool:
        """Whether the file was modified (or replaced, or unlinked) since `stamp` was taken.

        One fstat; call it after a pread to know the bytes read are the ones
        the stamp vouches for (the kernel updates the times before the data).
        """
        return fd_changed(self.fd, self.stamp)


class BytesReader:
    """A blob held in memory (synthesized documents, descriptor `data` fields)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def pread(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]

    def close(self) -> None:
        pass


class ReaderFile(io.RawIOBase):
    """A seekable, read-only file object over a BlobReader.

    For libraries that want a file object (gzip/zstd random-access readers).
    Not thread-safe: each user keeps its own instance.
    """

    def __init__(self, reader: BlobReader) -> None:
        super().__init__()
        self._reader = reader
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._reader.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._reader.pread(self._pos, len(buffer))
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._reader.size - self._pos)
        data = self._reader.pread(self._pos, size)
        self._pos += len(data)
        return data

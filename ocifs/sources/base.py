"""The small read interface every kind of image source implements.

A source presents itself as an OCI image layout: the raw bytes of `oci-layout`
and `index.json`, and blobs addressed by digest. Sources that lack some of these
(a legacy `docker save` tar has no manifests) synthesize them and say so via
`synthesized()`. Nothing here knows about FUSE.

Thread-safety: `BlobReader.pread`, `open_blob`, `blob_size` and `list_blobs`
and `index_bytes` may be called from worker threads concurrently (documents,
blob listings and a changed index.json are read off the trio thread);
`index_changed` (one stat) is called on the trio thread. No method may block
on a file another program controls: opens are non-blocking and anything but a
regular file is refused (`open_regular`).
Remote sources (`remote = True`, registries) may wait on the network in any
method but `index_changed`; the tree calls those only from worker threads.
"""

from __future__ import annotations

import io
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Protocol

from ocifs.errors import NotRegularFile
from ocifs.model.digest import Digest


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


class Source(ABC):
    """An image source seen as an OCI layout. See the module docstring."""

    #: "layout", "oci-archive" or "docker-archive"; shown in logs.
    kind: str = ""
    #: whether `.import/` is offered (layout directories only).
    writable: bool = False
    #: True when `open_blob(...).pread` may wait on the network (registries): the
    #: tree then calls it in worker threads, and such readers verify blobs
    #: themselves (BlobAccess skips its own sequential check).
    remote: bool = False

    def __init__(self, path: str) -> None:
        self.path = path

    @abstractmethod
    def oci_layout_bytes(self) -> bytes:
        """Raw `oci-layout` file (synthesized for sources that lack one)."""

    @abstractmethod
    def index_bytes(self) -> bytes:
        """Raw `index.json` (synthesized for legacy docker-save archives)."""

    def index_changed(self) -> bool:
        """Cheap check whether `index.json` changed since the last `index_bytes()`."""
        return False

    @abstractmethod
    def blob_size(self, digest: Digest) -> int | None:
        """Size of the stored blob, or None if it is not present."""

    @abstractmethod
    def open_blob(self, digest: Digest) -> BlobReader:
        """Random access to a blob. Raises `BlobUnavailable` if it cannot be read."""

    @abstractmethod
    def list_blobs(self) -> Iterable[Digest]:
        """Every blob present in the source (for the `blobs/` directory)."""

    def synthesized(self, digest: Digest) -> bool:
        """True for blobs ocifs made up (legacy docker-save manifests)."""
        return False

    def identity(self) -> str:
        """A string that changes when the source's content may have changed.

        Used to key persistent caches of derived data for archive sources.
        """
        st = os.stat(self.path)
        return (
            f"{os.path.realpath(self.path)}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        )

    def close(self) -> None:  # noqa: B027 - optional hook; most sources hold nothing
        """Release file descriptors."""

"""Readers over a layer's decompressed stream, one per random-access scheme.

- `UnpackedReader`: the decompressed copy kept in the DiskCache (plain preads;
  each 1 MiB block is CRC-checked against the index the first time it is read,
  so a damaged copy is detected, never served).
- `ZstdCursorReader`: the fallback for zstd layers too big for a copy: keeps
  one decoder position and restarts from the beginning for backward seeks.
Gzip layers too big for a copy use `seekable.open_gzip`.
"""

from __future__ import annotations

import os
import threading
from typing import IO, cast

import zstandard

from ocifs.codec.blobio import BlobReader, ReaderFile, clamp
from ocifs.codec.decode import CRC_BLOCK, crc32
from ocifs.errors import LayerCorrupt

_local = threading.local()


def _scratch(size: int) -> memoryview:
    """A reused buffer of at least `size` bytes for this thread (CRC block reads:
    no new zeroed megabyte, and no page faults, per block)."""
    buf: bytearray | None = getattr(_local, "buf", None)
    if buf is None or len(buf) < size:
        buf = _local.buf = bytearray(max(size, 2 * CRC_BLOCK))
    return memoryview(buf)[:size]


class CopyCorrupt(Exception):
    """A block of the unpacked copy does not match its CRC: discard and rebuild."""


class UnpackedReader:
    """See the module docstring. Owns `fd`. Thread-safe."""

    def __init__(self, fd: int, size: int, crcs: list[int]) -> None:
        self.fd = fd
        self._size = size
        self._crcs = crcs
        self._checked = bytearray(len(crcs))

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, size: int) -> bytes:
        data = self._read(offset, size, 0)
        assert data is not None  # only RWF_NOWAIT answers None
        return data

    def pread_if_cached(self, offset: int, size: int) -> bytes | None:
        """`pread` if every byte it needs (its CRC blocks included) is in the page
        cache, else None: never waits for the disk."""
        return self._read(offset, size, os.RWF_NOWAIT)

    def _read(self, offset: int, size: int, flags: int) -> bytes | None:
        """The bytes at `offset`, reading each unchecked CRC block it touches once.

        A block not checked yet is read whole into this thread's scratch buffer,
        checked, and the answer is cut from it: on a fresh mount every file is in
        an unchecked block, and reading the block and then the file again (two
        `preadv`s, a zeroed 1 MiB buffer and a copy each time) was a third of the
        daemon's time for `tar -cf` of a layer (py-spy, docs/layers.md).
        """
        size = clamp(offset, size, self._size)
        if not size:
            return b""
        end = offset + size
        first, last = offset // CRC_BLOCK, (end - 1) // CRC_BLOCK
        checked = self._checked
        if all(checked[first : last + 1]):
            if not flags:
                return os.pread(self.fd, size, offset)
            span_start, span = offset, size  # RWF_NOWAIT needs a buffer: the scratch one
        else:
            span_start = first * CRC_BLOCK
            span = min((last + 1) * CRC_BLOCK, self._size) - span_start
        view = _scratch(span)
        try:
            got = os.preadv(self.fd, [view], span_start, flags)
        except OSError:  # EAGAIN: not all cached; EOPNOTSUPP: no RWF_NOWAIT here
            if flags:
                return None
            raise
        if got != span:
            if flags:
                return None  # part of it is not in the page cache
            raise CopyCorrupt(f"block {first}: the copy is shorter than its index says")
        for block in range(first, last + 1):
            if not checked[block]:
                at = (block - first) * CRC_BLOCK
                if crc32(view[at : at + CRC_BLOCK]) != self._crcs[block]:
                    raise CopyCorrupt(f"block {block}")
                checked[block] = 1
        return bytes(view[offset - span_start : end - span_start])

    def close(self) -> None:
        os.close(self.fd)


class ZstdCursorReader:
    """Sequential-only zstd access (see the module docstring). Thread-safe."""

    def __init__(self, blob: BlobReader, size: int, where: str) -> None:
        self._blob = blob
        self._size = size
        self._where = where
        self._lock = threading.Lock()
        self._stream: zstandard.ZstdDecompressionReader | None = None
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, size: int) -> bytes:
        with self._lock:
            if self._stream is None or offset < self._pos:
                dctx = zstandard.ZstdDecompressor()
                self._stream = dctx.stream_reader(
                    cast(IO[bytes], ReaderFile(self._blob)), read_across_frames=True
                )
                self._pos = 0
            stream = self._stream
            try:
                while self._pos < offset:
                    skipped = len(stream.read(min(offset - self._pos, 1 << 20)))
                    if not skipped:
                        break
                    self._pos += skipped
                data = stream.read(size)
            except zstandard.ZstdError as exc:
                self._stream = None
                raise LayerCorrupt(f"layer {self._where}: zstd data corrupt: {exc}") from exc
            self._pos += len(data)
            return data

    def close(self) -> None:
        with self._lock:
            self._stream = None

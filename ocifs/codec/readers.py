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

from ocifs.codec.blobio import BlobReader, ReaderFile, clamp, pread_cached
from ocifs.codec.decode import CRC_BLOCK, crc32
from ocifs.errors import LayerCorrupt


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
        size = clamp(offset, size, self._size)
        if not size:
            return b""
        end = offset + size
        first, last = offset // CRC_BLOCK, (end - 1) // CRC_BLOCK
        checked = self._checked
        for block in range(first, last + 1):
            if not checked[block]:
                data = os.pread(self.fd, CRC_BLOCK, block * CRC_BLOCK)
                if crc32(data) != self._crcs[block]:
                    raise CopyCorrupt(f"block {block}")
                checked[block] = 1
        return os.pread(self.fd, end - offset, offset)

    def pread_if_cached(self, offset: int, size: int) -> bytes | None:
        """`pread` if every byte it needs (its CRC blocks included) is in the page
        cache, else None: never waits for the disk."""
        size = clamp(offset, size, self._size)
        if not size:
            return b""
        end = offset + size
        checked = self._checked
        for block in range(offset // CRC_BLOCK, (end - 1) // CRC_BLOCK + 1):
            if not checked[block]:
                want = min(CRC_BLOCK, self._size - block * CRC_BLOCK)
                data = pread_cached(self.fd, want, block * CRC_BLOCK)
                if data is None:
                    return None
                if crc32(data) != self._crcs[block]:
                    raise CopyCorrupt(f"block {block}")
                checked[block] = 1
        return pread_cached(self.fd, size, offset)

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

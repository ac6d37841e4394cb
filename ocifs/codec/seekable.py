"""Random access into a gzip stream through seek points kept in the disk cache.

A gzip stream has no index: reaching byte N means inflating everything before
it. `open_gzip` builds seek points once (indexed_gzip: one zlib pass that saves
the 32 KiB inflate window every `spacing` bytes of output), stores them in the
DiskCache (checksummed entry, so a damaged file is detected and rebuilt) and
afterwards serves any offset by inflating at most `spacing` bytes. Measurements
and the reasons for this choice are in docs/layers.md.

Used for gzip'd image archives and for gzip layers too big for an unpacked copy
(see `ocifs.layers.store`).
"""

from __future__ import annotations

import io
import logging
import struct
import threading
from typing import Any

import indexed_gzip

from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader, ReaderFile, clamp
from ocifs.errors import BlobUnavailable, Unmounting

log = logging.getLogger(__name__)

#: DiskCache kind of gzip seek point entries.
CACHE_KIND = "gzip-seek"
#: Bytes of output between seek points: a random read inflates at most this much.
SPACING = 1 << 20
# Small buffers keep a random small read cheap (docs/layers.md: 64 KiB buffers
# give ~1.5 ms per small file, indexed_gzip's 4 MiB default ~11 ms).
_BUFFER = 64 * 1024
_VERSION = 1
_HEAD = struct.Struct("<IQQ")  # version, compressed size, uncompressed size


class GzipSeekReader:
    """BlobReader over the decompressed bytes of a gzip blob. Thread-safe."""

    def __init__(self, handle: Any, size: int, key: str) -> None:
        self._handle = handle
        self._size = size
        self._key = key
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, size: int) -> bytes:
        size = clamp(offset, size, self._size)
        if not size:
            return b""
        try:
            with self._lock:
                self._handle.seek(offset)
                data: bytes = self._handle.read(size)
        except Exception as exc:  # indexed_gzip raises ZranError, OSError, ValueError
            raise BlobUnavailable(f"{self._key}: gzip data unreadable at {offset}: {exc}") from exc
        if len(data) != size:
            raise BlobUnavailable(f"{self._key}: gzip stream ends early at {offset + len(data)}")
        return data

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def _handle(reader: BlobReader) -> Any:
    return indexed_gzip.IndexedGzipFile(
        fileobj=ReaderFile(reader),
        spacing=SPACING,
        readbuf_size=_BUFFER,
        buffer_size=_BUFFER,
        auto_build=False,
    )


def _load(reader: BlobReader, cache: DiskCache, key: str) -> GzipSeekReader | None:
    payload = cache.get(CACHE_KIND, key, version=_VERSION)
    if payload is None:
        return None
    try:
        version, csize, usize = _HEAD.unpack_from(payload)
        if version != _VERSION or csize != reader.size:
            raise ValueError("stale entry")
        handle = _handle(reader)
        handle.import_index(fileobj=io.BytesIO(payload[_HEAD.size :]))
    except Exception as exc:
        log.warning("gzip seek points for %s unusable (%s); rebuilding", key, exc)
        cache.discard(CACHE_KIND, key)
        return None
    return GzipSeekReader(handle, usize, key)


class _Stoppable:
    """The blob as `_build` reads it: each read first checks the stop flag, so the one
    inflate pass over a big layer (seconds per GiB, in a worker thread trio cannot
    cancel) ends at its next read when the daemon unmounts, as `LayerPass` does."""

    __slots__ = ("_key", "_reader", "_stop")

    def __init__(self, reader: BlobReader, stop: threading.Event, key: str) -> None:
        self._reader = reader
        self._stop = stop
        self._key = key

    @property
    def size(self) -> int:
        return self._reader.size

    def pread(self, offset: int, size: int) -> bytes:
        if self._stop.is_set():
            raise Unmounting(f"{self._key}: seek point build stopped (unmounting)")
        return self._reader.pread(offset, size)

    def close(self) -> None:
        self._reader.close()


def _build(
    reader: BlobReader, cache: DiskCache, key: str, stop: threading.Event | None = None
) -> GzipSeekReader:
    handle = _handle(reader if stop is None else _Stoppable(reader, stop, key))
    try:
        handle.build_full_index()
        usize = handle.seek(0, io.SEEK_END)
        out = io.BytesIO()
        handle.export_index(fileobj=out)
    except Exception as exc:
        handle.close()
        if stop is not None and stop.is_set():  # whatever indexed_gzip made of the stop
            raise Unmounting(f"{key}: seek point build stopped (unmounting)") from None
        raise BlobUnavailable(f"{key}: not a readable gzip stream: {exc}") from exc
    cache.put(
        CACHE_KIND, key, _HEAD.pack(_VERSION, reader.size, usize) + out.getvalue(), version=_VERSION
    )
    return GzipSeekReader(handle, usize, key)


def open_gzip(
    reader: BlobReader, cache: DiskCache, key: str, stop: threading.Event | None = None
) -> BlobReader:
    """A reader over the decompressed stream of the gzip blob `reader`.

    Seek points are built on first use (one full inflate pass, blocking: call
    from a worker thread) and kept in `cache` under `key`, which must identify
    the compressed bytes (a digest, an archive identity). Raises BlobUnavailable
    if the blob is not a complete gzip stream, Unmounting if `stop` is set during
    the build (nothing is cached then).
    """
    loaded = _load(reader, cache, key)
    return loaded if loaded is not None else _build(reader, cache, key, stop)

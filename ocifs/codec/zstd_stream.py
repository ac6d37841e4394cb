"""A zstd-compressed archive as a random-access stream, for mounting it directly.

A zstd frame as `zstd` and `docker save | zstd` write it has no seek table and
cannot be entered in the middle, so the archive is decompressed once, when it is
first opened (the same single pass, `layers.decode.LayerPass`, that unpacks
layers), into the cache: the tar under kind `archive-data`, and its size with
one CRC per MiB under kind `archive-copy`. Reads are plain preads of that copy,
each MiB checked against its CRC the first time it is read, so a damaged copy is
never served: it is decompressed again and the read retried. A tar too
big for the cache (over a quarter of its limit, as for layers) is read with a
sequential cursor instead: correct, but every backward seek decompresses from
the start again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import IO, cast

import zstandard

from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader, ReaderFile
from ocifs.codec.damage import StreamDamaged
from ocifs.codec.decode import LayerPass
from ocifs.codec.limits import DEFAULT, Limits
from ocifs.codec.readers import CopyCorrupt, UnpackedReader, ZstdCursorReader
from ocifs.errors import BlobUnavailable, InvalidInput
from ocifs.model.mediatypes import Compression

log = logging.getLogger(__name__)

COPY_KIND = "archive-data"
META_KIND = "archive-copy"


def head(raw: BlobReader, size: int) -> bytes:
    """The first `size` decompressed bytes (fewer if the stream is short or corrupt)."""
    reader = zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], ReaderFile(raw)))
    try:
        return reader.read(size)
    except zstandard.ZstdError:
        return b""


def open_zstd(
    raw: BlobReader, cache: DiskCache, identity: str, where: str, limits: Limits = DEFAULT
) -> BlobReader:
    """A reader over the decompressed archive (blocking: may decompress all of it)."""
    copies = _Copies(raw, cache, f"archive:{identity}", where, limits)
    opened = copies.open() or copies.build()
    if opened is not None:
        return _CheckedCopy(*opened, copies)
    log.warning(
        "%s: %d bytes of tar are too many for the cache; reading it sequentially (slow for "
        "random access; raise --cache-size or decompress the archive first)",
        where,
        copies.produced,
    )
    return ZstdCursorReader(raw, copies.produced, where)


_Opened = tuple[int, int, list[int]]  # (fd, size, crcs) of a copy in the cache


class _Copies:
    """Finds, builds and drops the cached decompressed copy of one archive."""

    def __init__(
        self, raw: BlobReader, cache: DiskCache, key: str, where: str, limits: Limits
    ) -> None:
        self.raw, self.cache, self.key, self.where, self.limits = raw, cache, key, where, limits
        self.produced = 0

    def open(self) -> _Opened | None:
        cache, key = self.cache, self.key
        payload = cache.get(META_KIND, key)
        if payload is None:
            return None
        try:
            meta = json.loads(payload)
            size, crcs = int(meta["size"]), [int(c) for c in meta["crcs"]]
        except (ValueError, KeyError, TypeError):
            self.drop()
            return None
        fd = cache.open_file(COPY_KIND, key, size)
        if fd is None:
            cache.discard(META_KIND, key)  # missing or wrong-sized copy: build it again
            return None
        return fd, size, crcs

    def build(self) -> _Opened | None:
        """Decompress the archive into the cache; None if the tar is too big for it."""
        log.info("%s: decompressing the zstd archive into the cache", self.where)
        cache = self.cache
        temp, sink = cache.new_temp(COPY_KIND)
        kept = False
        try:
            with sink:
                lp = LayerPass(self.raw, None, Compression.ZSTD, self.where, self.limits, sink,
                               cache.limit_bytes // 4)
                try:
                    for _ in lp.chunks():
                        pass
                    lp.finish()
                except (StreamDamaged, BlobUnavailable) as exc:
                    raise InvalidInput(
                        f"{self.where}: zstd stream is truncated or corrupt ({exc})"
                    ) from None
                finally:
                    lp.close()
            self.produced = lp.produced
            if lp.sink is not None:
                cache.commit_file(temp, COPY_KIND, self.key)
                kept = True
                meta = {"size": lp.produced, "crcs": lp.crcs}
                cache.put(META_KIND, self.key, json.dumps(meta).encode())
        finally:
            if not kept:
                temp.unlink(missing_ok=True)
        return self.open() if kept else None

    def drop(self) -> None:
        self.cache.discard(META_KIND, self.key)
        self.cache.discard(COPY_KIND, self.key)


class _CheckedCopy(UnpackedReader):
    """The cached copy. A block failing its CRC makes it decompress the archive
    again, once, and retry; a second failure fails the read."""

    def __init__(self, fd: int, size: int, crcs: list[int], copies: _Copies) -> None:
        super().__init__(fd, size, crcs)
        self._copies = copies
        self._lock = threading.Lock()
        self._rebuilt = False
        self._retired: list[int] = []  # replaced descriptors other threads may still use

    def pread(self, offset: int, size: int) -> bytes:
        try:
            return super().pread(offset, size)
        except CopyCorrupt as exc:
            self._rebuild(exc)
        try:
            return super().pread(offset, size)
        except CopyCorrupt as exc:
            raise BlobUnavailable(
                f"{self._copies.where}: the cached decompressed copy is damaged ({exc})"
            ) from None

    def _rebuild(self, exc: CopyCorrupt) -> None:
        with self._lock:
            if self._rebuilt:
                return
            self._rebuilt = True
            where = self._copies.where
            log.warning("%s: cached decompressed copy is damaged (%s); rebuilding it", where, exc)
            self._copies.drop()
            opened = self._copies.build()
            if opened is None:
                raise BlobUnavailable(f"{where}: cannot rebuild the decompressed copy")
            self._retired.append(self.fd)
            self.fd, self._size, self._crcs = opened
            self._checked = bytearray(len(self._crcs))

    def close(self) -> None:
        super().close()
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

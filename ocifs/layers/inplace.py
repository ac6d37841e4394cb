"""Layer bytes read in place from the blob: only while the blob is the one verified.

An uncompressed layer (and a compressed one too big for an unpacked copy) is
served by reading its blob file directly, long after the indexing pass checked
the blob's digest, and possibly with an index loaded from the cache that was
built from another copy of the layer. So before a blob is read in place its
identity is checked: `(size, mtime_ns, ctime_ns, inode, device)` for a layout
file or the plain tar archive holding it (`base.stamp_of`), else the source's
identity.
An identity this process or an earlier one (a `verified-blob` cache entry)
hashed and found right is trusted; any other is hashed first, and one that does
not match is refused (EIO) until the file changes again. While reading, each
pread is followed by an fstat (`GuardedBlob`): a blob modified after it was
verified fails that read with `BlobChanged` and is verified again on the next.
"""

from __future__ import annotations

import logging
import threading

from ocifs import log as log_mod
from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader, FileRegionReader, StampedRegionReader
from ocifs.errors import BlobUnavailable, Unmounting
from ocifs.model.digest import Digest
from ocifs.sources.base import Source

log = logging.getLogger(__name__)

#: DiskCache kind of "this blob file, with this identity, matched its digest" records.
VERIFIED_KIND = "verified-blob"
_VERSION = 1
_CHUNK = 1 << 20


class BlobChanged(BlobUnavailable):
    """The blob file changed on disk after it was verified."""


class GuardedBlob:
    """A blob read in place: every pread is followed by a check that the file is unchanged."""

    __slots__ = ("_blob", "digest")

    def __init__(self, blob: FileRegionReader, digest: Digest) -> None:
        self._blob = blob
        self.digest = digest

    @property
    def size(self) -> int:
        return self._blob.size

    def pread(self, offset: int, size: int) -> bytes:
        data = self._blob.pread(offset, size)
        if self._blob.changed():
            raise BlobChanged(
                f"layer {self.digest}: the file holding it changed on disk after it was "
                "verified; reads fail until it verifies again (a changed archive: remount)"
            )
        return data

    def pread_if_cached(self, offset: int, size: int) -> bytes | None:
        """`pread` if the page cache holds the bytes (None, never a disk wait)."""
        data = self._blob.pread_if_cached(offset, size)
        if data is not None and self._blob.changed():
            return None  # let the real read report it
        return data

    def close(self) -> None:
        self._blob.close()


class InPlaceVerifier:
    """Remembers which blob identities matched (or failed) their digest. Thread-safe."""

    def __init__(
        self, source: Source, cache: DiskCache, stop: threading.Event | None = None
    ) -> None:
        self.source = source
        self.cache = cache
        #: the store's stop flag: a hash pass over a big blob ends when it is set
        self.stop = stop
        self._lock = threading.Lock()
        self._good: dict[Digest, str] = {}
        self._bad: dict[Digest, str] = {}

    def identity(self, blob: BlobReader) -> str:
        """What must stay the same for a verification to stay valid ("" if unknown)."""
        stamp = getattr(blob, "stamp", None)
        if stamp is not None:
            return repr(stamp)
        try:
            return self.source.identity()
        except OSError:
            return ""

    def verified(self, digest: Digest, blob: BlobReader) -> None:
        """Record that `blob` (just hashed by an indexing pass) matched `digest`."""
        ident = self.identity(blob)
        if isinstance(blob, FileRegionReader) and blob.changed():
            return
        with self._lock:
            self._good[digest] = ident
            self._bad.pop(digest, None)
        if ident:
            self.cache.put(VERIFIED_KIND, f"{digest}\0{ident}", b"ok", version=_VERSION)

    def ensure(self, digest: Digest, blob: BlobReader) -> BlobReader:
        """`blob` guarded for reading in place, after hashing it unless already known good."""
        ident = self.identity(blob)
        with self._lock:
            good, bad = self._good.get(digest), self._bad.get(digest)
        if good is None or good != ident or not ident:
            if bad is not None and bad == ident:
                raise BlobUnavailable(f"layer {digest}: content does not match its digest")
            known = ident and self.cache.get(VERIFIED_KIND, f"{digest}\0{ident}", version=_VERSION)
            if not known:
                if not _hash_matches(blob, digest, self.stop):
                    with self._lock:
                        self._bad[digest] = ident
                    message = f"layer {digest}: content does not match its digest"
                    log_mod.once(log, logging.ERROR, f"{message} (blob changed after indexing?)")
                    raise BlobUnavailable(message)
                if ident:
                    self.cache.put(VERIFIED_KIND, f"{digest}\0{ident}", b"ok", version=_VERSION)
            with self._lock:
                self._good[digest] = ident
                self._bad.pop(digest, None)
        if isinstance(blob, StampedRegionReader):
            return GuardedBlob(blob, digest)
        return blob

    def forget(self, digest: Digest) -> None:
        with self._lock:
            self._good.pop(digest, None)


def _hash_matches(blob: BlobReader, digest: Digest, stop: threading.Event | None) -> bool:
    hasher = digest.hasher()
    for offset in range(0, blob.size, _CHUNK):
        if stop is not None and stop.is_set():
            raise Unmounting(f"layer {digest}: not verified (unmounting)")
        data = blob.pread(offset, _CHUNK)
        if not data:
            return False
        hasher.update(data)
    return hasher.hexdigest() == digest.hex

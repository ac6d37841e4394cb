"""Reading blobs for the tree: cached open readers, size checks, verify-on-read.

Raw blob files are verified as they are read sequentially (RELIABILITY decision
4): bytes read at the expected next offset feed a hash; the read that reaches
the end fails with EIO if the digest does not match, and the blob is marked bad
for the rest of the mount. Large blobs are hashed by a helper thread so the trio
loop only hands chunks over; if the reader outpaces the hasher, verification of
that pass is abandoned rather than blocking reads.

A blob's own state (missing, not a regular file, failed its digest) is kept per
digest; a descriptor's size is checked on every access through that descriptor
(`declared_size`), so a manifest that gives a wrong size fails only the files
that show the blob through it, whatever was read first, and `blobs/<alg>/<hex>`
(shown with the size on disk) keeps serving the blob's own bytes.

A layout blob file that changes on disk after it was opened (detected by its
fstat identity after each read) is closed and forgotten, its verification
starts over, and that read fails with EIO: bytes read across a change are
never served.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict

import trio

from ocifs import log as log_mod
from ocifs.codec.blobio import BlobReader, FileRegionReader
from ocifs.errors import BlobUnavailable, OcifsError
from ocifs.model.digest import Digest
from ocifs.sources.base import Source

log = logging.getLogger(__name__)

#: blobs up to this size are hashed inline; larger ones in a helper thread
INLINE_HASH_LIMIT = 4 * 1024 * 1024
MAX_OPEN_READERS = 256
_QUEUE_CHUNKS = 64
#: reads of remote blobs in flight (each may wait for a download in a thread)
REMOTE_READERS = 16


class _Verifier:
    """Sequential hash of one blob; see the module docstring."""

    def __init__(self, digest: Digest, size: int) -> None:
        self.digest = digest
        self.size = size
        self.next_offset = 0
        self._hasher = digest.hasher()
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self.abandoned = False
        if size > INLINE_HASH_LIMIT:
            self._queue = queue.Queue(maxsize=_QUEUE_CHUNKS)
            self._thread = threading.Thread(target=self._run, name="ocifs-verify", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None or self.abandoned:  # None: stop
                return
            self._hasher.update(item)

    def feed(self, offset: int, data: bytes) -> bool:
        """Account for a read; True when this read completed the blob."""
        if self.abandoned or offset != self.next_offset or not data:
            return False
        self.next_offset += len(data)
        if self._queue is None:
            self._hasher.update(data)
        else:
            try:
                self._queue.put_nowait(data)
            except queue.Full:
                self.abandon()
                return False
        return self.next_offset >= self.size

    def abandon(self) -> None:
        """Stop hashing: an idle helper is woken by the marker, a busy one sees the flag."""
        self.abandoned = True
        if self._queue is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass

    def finish(self) -> bool:
        """Wait for the hash (blocking) and say whether it matched."""
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        return self._hasher.hexdigest() == self.digest.hex


class BlobAccess:
    """Shared by every node that shows blob bytes. Methods run on the trio thread."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._readers: OrderedDict[Digest, BlobReader] = OrderedDict()
        self._bad: dict[Digest, str] = {}
        self._verified: set[Digest] = set()
        self._verifiers: dict[Digest, _Verifier] = {}
        self._limiter = trio.CapacityLimiter(2)
        #: reads of remote blobs, which may wait for a download in a thread
        self._remote = trio.CapacityLimiter(REMOTE_READERS)

    def reader(self, digest: Digest, declared_size: int | None) -> BlobReader:
        """An open reader, with its size checked against the descriptor.

        Opening cannot block (layout blobs are opened O_NONBLOCK and must be
        regular files; archive members are regions of an open file).
        """
        reason = self._bad.get(digest)
        if reason is not None:
            raise BlobUnavailable(reason)
        reader = self._readers.get(digest)
        if reader is None:
            try:
                reader = self.source.open_blob(digest)
            except BlobUnavailable as exc:
                self._mark_bad(digest, str(exc))
                raise
            self._readers[digest] = reader
            if len(self._readers) > MAX_OPEN_READERS:
                _old, old_reader = self._readers.popitem(last=False)
                old_reader.close()
        else:
            self._readers.move_to_end(digest)
        if declared_size is not None and reader.size != declared_size:
            # A fault of the descriptor, not of the blob: only this view fails.
            reason = (
                f"blob {digest}: size on disk is {reader.size}, descriptor says {declared_size}"
            )
            log_mod.once(log, logging.ERROR, reason)
            raise BlobUnavailable(reason)
        return reader

    def _mark_bad(self, digest: Digest, reason: str) -> None:
        log_mod.once(log, logging.ERROR, reason)
        self._bad[digest] = reason

    def _forget(self, digest: Digest) -> None:
        """Drop everything known about a blob whose file changed: it is opened again."""
        reader = self._readers.pop(digest, None)
        if reader is not None:
            reader.close()
        self._verified.discard(digest)
        verifier = self._verifiers.pop(digest, None)
        if verifier is not None:
            verifier.abandon()

    def forget_failures(self) -> None:
        """Re-check blobs found missing or short: an import may have supplied them.

        (A committed blob is never rewritten, so only absent blobs can change.)
        """
        self._bad.clear()

    def check(self, digest: Digest, declared_size: int | None) -> None:
        """Fail at open() already for blobs known to be unreadable."""
        self.reader(digest, declared_size)

    async def read(
        self, digest: Digest, declared_size: int | None, offset: int, size: int
    ) -> bytes:
        reader = self.reader(digest, declared_size)
        if self.source.remote:
            # The reader may wait on the network; it verifies the blob itself.
            ready = getattr(reader, "ready", None)
            if ready is not None and ready(offset, size):
                return reader.pread(offset, size)  # a local, verified copy
            return await trio.to_thread.run_sync(
                reader.pread, offset, size, limiter=self._remote
            )
        if isinstance(reader, FileRegionReader):
            data = reader.pread(offset, size)  # a regular file: a page-cache copy, inline
            if reader.changed():
                self._forget(digest)
                reason = (
                    f"blob {digest}: the file holding it changed on disk while mounted; "
                    "reads fail until it verifies again (a changed archive: remount)"
                )
                log_mod.once(log, logging.WARNING, reason)
                raise BlobUnavailable(reason)
        else:  # a member of a compressed archive: decompression, in a worker thread
            try:
                data = await trio.to_thread.run_sync(
                    reader.pread, offset, size, limiter=self._limiter
                )
            except BlobUnavailable as exc:  # damaged or changed archive
                log_mod.once(log, logging.ERROR, f"blob {digest}: {exc}", cause=str(exc))
                raise
        if digest in self._verified:
            return data
        verifier = self._verifiers.get(digest)
        if offset == 0 and verifier is not None and verifier.next_offset != 0:
            verifier.abandon()  # an earlier pass went out of order; start over
            verifier = None
        if verifier is None:
            if offset != 0:
                return data
            verifier = self._verifiers[digest] = _Verifier(digest, reader.size)
        if reader.size == 0 or verifier.feed(offset, data):
            del self._verifiers[digest]
            ok = await trio.to_thread.run_sync(verifier.finish)
            if not ok:
                self._mark_bad(digest, f"blob {digest}: content does not match its digest")
                raise BlobUnavailable(self._bad[digest])
            self._verified.add(digest)
        elif verifier.abandoned:
            del self._verifiers[digest]
        return data

    def close(self) -> None:
        for reader in self._readers.values():
            try:
                reader.close()
            except OcifsError:
                pass
        self._readers.clear()
        for verifier in self._verifiers.values():
            verifier.abandon()
        self._verifiers.clear()

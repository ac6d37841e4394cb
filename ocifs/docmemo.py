"""Documents already verified against their digest, kept for the next reader (bounded).

A manifest is read and verified when its image directory is built, and again
straight after by `export.plan` for the directory's `image.tar`; an index's
child manifests are read by the plan and again when `platforms/` is browsed.
Content addressing makes a memo safe: bytes that hashed to a digest are those
bytes for ever, whatever happens to the file since. A descriptor that names
the digest with another size still goes to the source (and fails there as before).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ocifs import catalog
from ocifs.model.descriptor import Descriptor
from ocifs.model.digest import Digest
from ocifs.sources.base import Source

#: bytes of documents kept (least recently used go first): ~1,000 typical manifests
MAX_BYTES = 4 << 20
#: larger documents (huge indexes) are not kept
MAX_ENTRY_BYTES = 1 << 20


class DocumentMemo:
    """digest -> verified bytes, LRU-bounded by total size. Thread-safe."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entry: int = MAX_ENTRY_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self._docs: OrderedDict[Digest, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def read(self, source: Source, desc: Descriptor) -> bytes:
        """`catalog.read_document`, served from the memo when this digest was verified."""
        if desc.data is not None:
            return catalog.read_document(source, desc)
        with self._lock:
            data = self._docs.get(desc.digest)
            if data is not None and len(data) == desc.size:
                self._docs.move_to_end(desc.digest)
                self.hits += 1
                return data
            self.misses += 1
        data = catalog.read_document(source, desc)  # verified (size and digest) or raises
        self._put(desc.digest, data)
        return data

    def _put(self, digest: Digest, data: bytes) -> None:
        if len(data) > self.max_entry:
            return
        with self._lock:
            if digest in self._docs:
                return
            self._docs[digest] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, old = self._docs.popitem(last=False)
                self._bytes -= len(old)

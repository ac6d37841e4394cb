"""A layer's diff_id (sha256 of its decompressed stream), computed only when needed.

Only `rootfs/` needs it (the config's `rootfs.diff_ids` say which layers the
image is made of); a layer tree is served on the layer's own digest. So the
indexing pass of a layer whose unpacked copy is kept in the cache does not hash
its decompressed stream: the first `rootfs/` hashes the copy (on a worker
thread; hashlib and the reads release the GIL) and keeps the result in the
cache as a small checked entry of its own (kind `layer-diff-id`), so later
mounts reuse it. docs/layers.md ("The diff_id, off the first listing") has the
measurements behind this.

The pass still hashes as it goes where no copy is expected (`hash_in_pass`),
and for a `rootfs/` that is waiting for it (`LayerStore.need_diff_ids`: the
hash then runs beside the walk, cheaper than reading the copy back). Where no
copy can be read (evicted, or the layer turned out too big for one), or the
copy fails its CRCs, the blob is decoded once more just for the hash.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading

from ocifs.cache import DiskCache
from ocifs.codec.blobio import BlobReader
from ocifs.codec.decode import CRC_BLOCK, LayerPass, crc32
from ocifs.codec.limits import Limits
from ocifs.codec.readers import CopyCorrupt
from ocifs.errors import LayerCorrupt, Unmounting
from ocifs.layers import indexer
from ocifs.model.digest import Digest
from ocifs.model.mediatypes import Compression

KIND = "layer-diff-id"
_VERSION = 1
_SHAPE = re.compile(r"sha256:[0-9a-f]{64}")


#: a compressed blob this many times smaller than the copy limit is taken to
#: decompress within it (tar layers: gzip and zstd give 2-4x)
STREAM_RATIO = 4


def hash_in_pass(size: int, unpack_limit: int) -> bool:
    """Whether the pass of a compressed layer that may keep an unpacked copy
    (the store's only case: an uncompressed layer, or copies turned off, is
    hashed in its pass anyway) should hash the decompressed stream itself.

    Yes when the stream may outgrow the copy limit: the copy is then dropped
    and the hash would cost a second full decoding of the blob later. Its size
    is not known before the end, so the blob's size decides (`STREAM_RATIO`)."""
    return size * STREAM_RATIO > unpack_limit


def load(cache: DiskCache, key: str) -> str:
    """The diff_id kept for layer `key`, or "" (none, or not a sha256 digest)."""
    payload = cache.get(KIND, key, version=_VERSION)
    text = payload.decode("ascii", "replace") if payload is not None else ""
    return text if _SHAPE.fullmatch(text) else ""


def store(cache: DiskCache, key: str, diff_id: str) -> None:
    """Keep a computed diff_id (atomic, checksummed: DiskCache.put)."""
    cache.put(KIND, key, diff_id.encode("ascii"), version=_VERSION)


def from_copy(fd: int, size: int, crcs: list[int], stop: threading.Event | None = None) -> str:
    """sha256 of the first `size` bytes of an unpacked copy, each 1 MiB block
    checked against its CRC on the way (CopyCorrupt: the copy is not the stream
    the pass produced, so its hash would say nothing about the layer). Ends
    with `Unmounting` once `stop` is set (the store's stop flag)."""
    hasher = hashlib.sha256()
    for block, start in enumerate(range(0, size, CRC_BLOCK)):
        if stop is not None and stop.is_set():
            raise Unmounting("diff_id not hashed (unmounting)")
        data = os.pread(fd, min(CRC_BLOCK, size - start), start)
        if block >= len(crcs) or crc32(data) != crcs[block]:
            raise CopyCorrupt(f"block {block}")
        hasher.update(data)
    return f"sha256:{hasher.hexdigest()}"


def from_blob(
    reader: BlobReader,
    digest: Digest,
    compression: Compression,
    limits: Limits,
    size: int,
    stop: threading.Event | None = None,
) -> str:
    """sha256 of the first `size` decompressed bytes, by one more decoding pass
    (the blob's digest is checked at its end: BlobUnavailable if it changed).
    `size` is what the indexing pass produced: the whole stream, or what came
    before the damage, as it hashed before this module existed."""
    lp = LayerPass(reader, digest, compression, str(digest), limits, want_diff_id=True,
                   stop=stop)
    try:
        indexer.decode_prefix(lp, size)
        if lp.produced != size:
            raise LayerCorrupt(
                f"layer {digest}: decodes to {lp.produced} bytes now, {size} when indexed"
            )
        lp.finish()
    finally:
        lp.close()
    return lp.diff_id

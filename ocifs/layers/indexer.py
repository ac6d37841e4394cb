"""Index a layer blob in one pass (blocking: runs in a worker thread).

Glues `decode.LayerPass` (hash, decompress, tee) to `tarwalk.walk` and
`tarindex.IndexBuilder`. Damage inside the tar gives an incomplete index that
still lists what came before it; a digest mismatch raises BlobUnavailable and
nothing is kept.
"""

from __future__ import annotations

import logging
import threading
from typing import BinaryIO

from ocifs.codec.blobio import BlobReader
from ocifs.codec.damage import StreamDamaged
from ocifs.codec.decode import LayerPass
from ocifs.codec.limits import Limits
from ocifs.layers.serial import LayerRecord
from ocifs.layers.tarindex import IndexBuilder
from ocifs.layers.tarwalk import ChunkStream, walk
from ocifs.model.digest import Digest
from ocifs.model.mediatypes import Compression, layer_compression, sniff_compression

log = logging.getLogger(__name__)


def choose_compression(media_type: str, head: bytes, where: str) -> Compression:
    """Compression from the media type, overridden (with a warning) by clear magic bytes."""
    declared = layer_compression(media_type)
    sniffed = sniff_compression(head)
    if sniffed is Compression.UNKNOWN:
        if declared is Compression.UNKNOWN:
            return Compression.NONE  # e.g. an empty tar: let the walker judge it
        return declared
    if declared not in (sniffed, Compression.UNKNOWN):
        log.warning("layer %s: media type %s says %s but the content is %s; using the content",
                    where, media_type, declared.name, sniffed.name)
    return sniffed


def build(
    reader: BlobReader,
    digest: Digest,
    compression: Compression,
    limits: Limits,
    sink: BinaryIO | None = None,
    sink_limit: int = 0,
    builder: IndexBuilder | None = None,
    stop: threading.Event | None = None,
    *,
    want_diff_id: bool = True,
) -> tuple[LayerRecord, bool]:
    """(record, whether `sink` received the whole decompressed stream).

    `builder`: the caller's, to read the tree while the pass runs (LayerStore).
    `stop`: once set, the pass ends at its next chunk with `Unmounting`.
    `want_diff_id=False`: the record's diff_id stays "" unless it is free (an
    uncompressed sha256 layer); the store hashes the unpacked copy later, when
    a rootfs needs it (diffid.py)."""
    where = str(digest)
    lp = LayerPass(reader, digest, compression, where, limits, sink, sink_limit,
                   want_diff_id=want_diff_id, stop=stop)
    try:
        return _build(lp, limits, builder or IndexBuilder(where, limits))
    finally:
        lp.close()


def _build(lp: LayerPass, limits: Limits, builder: IndexBuilder) -> tuple[LayerRecord, bool]:
    where = lp.where
    chunks = lp.chunks()
    complete, error = True, None
    try:
        for member in walk(ChunkStream(chunks), limits, where):
            builder.add(member)
    except StreamDamaged as exc:
        complete, error = False, f"layer {where}: {exc}"
        log.warning("%s; showing the %d members before it", error, builder.members)
    valid = lp.produced
    try:
        # The rest of the stream (the tar's zero padding, or whatever follows) is
        # decoded too: it belongs to the layer's uncompressed digest (diff_id) and
        # damage in it is worth a line. It costs time only: memory is bounded by
        # the decoder's chunk size and zero chunks are holes in the copy.
        for _ in chunks:
            pass
        valid = lp.produced
    except StreamDamaged as exc:
        if complete:
            log.warning("layer %s: %s after the end of the tar archive (ignored)", where, exc)
    lp.finish()
    index = builder.finish(complete, error, lp.produced)
    diff_id = lp.diff_id if lp.has_diff_id else ""
    record = LayerRecord(index, lp.compression, valid, lp.crcs, diff_id)
    return record, lp.sink is not None


def unpack(reader: BlobReader, digest: Digest, compression: Compression,
           limits: Limits, sink: BinaryIO, size: int,
           stop: threading.Event | None = None) -> int:
    """Write the first `size` decompressed bytes (as far as indexing decoded:
    the same chunks, so the same CRCs) to `sink`, re-creating an evicted copy."""
    lp = LayerPass(reader, digest, compression, str(digest), limits, sink, limits.max_uncompressed,
                   stop=stop)
    try:
        decode_prefix(lp, size)
        lp.finish()
        sink.truncate(size)
    finally:
        lp.close()
    return lp.produced


def decode_prefix(lp: LayerPass, size: int) -> None:
    """Run `lp` until it has produced `size` bytes: what the indexing pass decoded
    (the whole stream, or what came before the damage, which the index already
    records, so StreamDamaged is no news here). The caller then calls `finish()`."""
    try:
        for _ in lp.chunks():
            if lp.produced >= size:
                break
    except StreamDamaged:
        pass

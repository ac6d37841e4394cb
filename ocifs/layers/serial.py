"""(De)serialisation of a layer's cached record: its index plus how to read its data.

marshal of plain tuples, lists and dicts: loading the 7.8k-entry index of the
200 MiB benchmark layer takes a few ms (docs/layers.md), where JSON of dicts
took several times longer. The format is versioned; any mismatch or decoding
problem is a cache miss (the DiskCache checksum already rejects damaged files).
"""

from __future__ import annotations

import marshal
from dataclasses import dataclass, field
from typing import Any

from ocifs.layers.entry import KINDS, Entry, LayerIndex
from ocifs.model.mediatypes import Compression

FORMAT = 4  # 2: diff_id added; 3: sparse maps; 4: diff_id "" means "not hashed yet"


@dataclass(slots=True)
class LayerRecord:
    """What the store keeps per layer digest."""

    index: LayerIndex
    compression: Compression
    #: decompressed bytes before any damage (reads must end before this).
    valid_size: int
    #: CRC32 of each 1 MiB block of the decompressed stream (unpacked-copy checks).
    crcs: list[int] = field(default_factory=list)
    #: `sha256:<hex>` of the decompressed stream (compared with the config's diff_ids).
    diff_id: str = ""


def dumps(record: LayerRecord) -> bytes:
    idx = record.index
    rows = [
        (e.name, e.parent, int(e.kind), e.mode, e.uid, e.gid, e.size, e.mtime_ns,
         e.data_offset, e.link, e.rdev, e.xattrs, e.identity, e.nlink, e.synthetic, e.sparse)
        for e in idx.entries
    ]
    return marshal.dumps((
        FORMAT, record.compression.value, record.valid_size, record.crcs,
        idx.complete, idx.error, idx.uncompressed_size, rows, idx.children, record.diff_id,
    ))


def loads(payload: bytes) -> LayerRecord | None:
    """The record, or None if the payload is of another format or malformed."""
    try:
        obj: Any = marshal.loads(payload)
        if not isinstance(obj, tuple) or len(obj) != 10 or obj[0] != FORMAT:
            return None
        _, comp, valid, crcs, complete, error, usize, rows, children, diff_id = obj
        entries = [
            Entry(n, p, KINDS[k], m, u, g, s, t, o, lk, r, x, i, nl, sy, sp)
            for (n, p, k, m, u, g, s, t, o, lk, r, x, i, nl, sy, sp) in rows
        ]
        if len(children) != len(entries):
            return None
        index = LayerIndex(entries, children, complete, error, usize)
        return LayerRecord(index, Compression(comp), valid, crcs, str(diff_id))
    except (ValueError, TypeError, EOFError, IndexError):
        return None

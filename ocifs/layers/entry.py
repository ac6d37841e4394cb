"""The member table of one layer: what the per-layer tree and the rootfs show."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.IntEnum):
    """Type of a layer entry (hard links are FILEs sharing an `identity`)."""

    FILE = 0
    DIR = 1
    SYMLINK = 2
    CHAR = 3
    BLOCK = 4
    FIFO = 5


KINDS = tuple(Kind)  # int -> Kind without the enum call cost (index loading)


@dataclass(slots=True)
class Entry:
    """One name in a layer. Field meanings are documented in docs/layers.md."""

    name: str
    parent: int
    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    data_offset: int
    link: str
    rdev: int
    xattrs: dict[str, bytes] | None
    identity: int
    nlink: int
    #: a parent directory that no tar member named (attributes are defaults);
    #: the merge keeps a lower layer's real directory attributes over it.
    synthetic: bool = False
    #: a sparse file: flattened (file offset, length) pairs of its data segments,
    #: stored back to back from `data_offset`; everything else reads as zeros.
    sparse: tuple[int, ...] | None = None


@dataclass(slots=True)
class LayerIndex:
    """Entries of one layer; entries[0] is the root, children maps names for DIRs.

    Entries replaced by a later member of the same layer stay in `entries`
    (hard links made before the replacement still point at their data) but are
    no longer reachable through `children`.
    """

    entries: list[Entry]
    children: list[dict[str, int] | None]
    complete: bool = True
    error: str | None = None
    uncompressed_size: int = 0

    def lookup(self, path: str) -> int | None:
        """Index of a normalised relative path ("" is the root), or None."""
        return lookup_path(self.children, path)

    def path(self, index: int) -> str:
        """Relative path of an entry (for messages and tests)."""
        parts: list[str] = []
        while index != 0:
            entry = self.entries[index]
            parts.append(entry.name)
            index = entry.parent
        return "/".join(reversed(parts))


def lookup_path(children: list[dict[str, int] | None], path: str) -> int | None:
    """Walk `children` tables from the root (index 0) along a normalised relative path."""
    node = 0
    if not path:
        return node
    for part in path.split("/"):
        kids = children[node]
        if kids is None or part not in kids:
            return None
        node = kids[part]
    return node


def sparse_pieces(entry: Entry, offset: int, size: int) -> list[tuple[int, int, int]]:
    """(file offset, stream offset, length) of the stored data inside the file
    range [offset, offset + size) of a sparse entry; the gaps are holes."""
    pieces: list[tuple[int, int, int]] = []
    sparse = entry.sparse or ()
    end = offset + size
    stream = entry.data_offset
    for i in range(0, len(sparse), 2):
        seg_off, seg_len = sparse[i], sparse[i + 1]
        if seg_off >= end:
            break
        lo, hi = max(seg_off, offset), min(seg_off + seg_len, end)
        if lo < hi:
            pieces.append((lo, stream + lo - seg_off, hi - lo))
        stream += seg_len
    return pieces

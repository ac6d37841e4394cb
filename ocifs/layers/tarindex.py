"""Turn a layer's tar members into a LayerIndex (one layer's tree, as extracted).

Applies what an extractor does within one layer: names are normalised inside
the root, missing parents are synthesised, a later member replaces an earlier
one of the same name (a directory replaced by a non-directory loses its
subtree; a directory over a directory only updates attributes), and hard links
resolve against the tree built so far, inside the root only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from ocifs.errors import LimitExceeded
from ocifs.layers import tarwalk
from ocifs.layers.entry import Entry, Kind, LayerIndex, lookup_path
from ocifs.layers.limits import Limits
from ocifs.layers.names import normalise
from ocifs.layers.tarwalk import Member

log = logging.getLogger(__name__)

_KIND_OF_TYPE = {
    tarwalk.SYMLINK: Kind.SYMLINK,
    tarwalk.CHAR: Kind.CHAR,
    tarwalk.BLOCKDEV: Kind.BLOCK,
    tarwalk.DIRECTORY: Kind.DIR,
    tarwalk.FIFO: Kind.FIFO,
    tarwalk.GNU_DUMPDIR: Kind.DIR,
}


def _synthetic_dir(name: str, parent: int, index: int) -> Entry:
    return Entry(name, parent, Kind.DIR, 0o755, 0, 0, 0, 0, 0, "", 0, None, index, 2, True)


class IndexBuilder:
    """Accumulates members; `finish` computes link counts. Not thread-safe."""

    def __init__(self, where: str, limits: Limits) -> None:
        self.where = where
        self.limits = limits
        self.entries: list[Entry] = [_synthetic_dir("", 0, 0)]
        self.children: list[dict[str, int] | None] = [{}]
        self.members = 0

    def add(self, member: Member) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise LimitExceeded(
                f"layer {self.where}: more than {self.limits.max_members} tar members"
            )
        path, escaped = normalise(member.name)
        if escaped:
            log.warning(
                "layer %s: member %r points outside the layer root; clamped to %r",
                self.where,
                member.name,
                path,
            )
        self._check_name(path, member.name)
        if member.sparse:
            log.warning("layer %s: sparse member %r is not supported; skipped", self.where, path)
            return
        if member.type == tarwalk.HARDLINK:
            self._add_hardlink(path, member)
            return
        kind = _KIND_OF_TYPE.get(member.type, Kind.FILE)
        if len(os.fsencode(member.link)) > self.limits.max_path_bytes:
            raise LimitExceeded(f"layer {self.where}: link target of {path!r} is too long")
        if not path:
            if kind is Kind.DIR:
                self._set_attrs(self.entries[0], member)
            else:
                log.warning(
                    "layer %s: non-directory member %r names the root; skipped",
                    self.where,
                    member.name,
                )
            return
        parent, name = self._parent_of(path)
        kids = self.children[parent]
        assert kids is not None
        old = kids.get(name)
        if kind is Kind.DIR and old is not None and self.entries[old].kind is Kind.DIR:
            self._set_attrs(self.entries[old], member)
            return
        index = len(self.entries)
        size = member.size if kind is Kind.FILE else 0
        self.entries.append(
            Entry(
                name,
                parent,
                kind,
                member.mode,
                member.uid,
                member.gid,
                size,
                member.mtime_ns,
                member.data_offset if kind is Kind.FILE else 0,
                member.link if kind is Kind.SYMLINK else "",
                member.rdev,
                member.xattrs,
                index,
                1,
            )
        )
        self.children.append({} if kind is Kind.DIR else None)
        kids[name] = index

    def _check_name(self, path: str, raw: str) -> None:
        encoded = os.fsencode(path)
        if len(encoded) > self.limits.max_path_bytes:
            raise LimitExceeded(f"layer {self.where}: member name {raw[:80]!r}... is too long")
        if len(encoded) > self.limits.max_name_bytes and any(
            len(part) > self.limits.max_name_bytes for part in encoded.split(b"/")
        ):
            raise LimitExceeded(
                f"layer {self.where}: a component of member {raw!r} is longer than "
                f"{self.limits.max_name_bytes} bytes"
            )

    @staticmethod
    def _set_attrs(entry: Entry, member: Member) -> None:
        entry.mode, entry.uid, entry.gid = member.mode, member.uid, member.gid
        entry.mtime_ns, entry.xattrs, entry.synthetic = member.mtime_ns, member.xattrs, False

    def _parent_of(self, path: str) -> tuple[int, str]:
        """Directory holding `path` (created as needed) and the last component."""
        *dirs, name = path.split("/")
        node = 0
        for part in dirs:
            kids = self.children[node]
            assert kids is not None
            child = kids.get(part)
            if child is None or self.entries[child].kind is not Kind.DIR:
                if child is not None:
                    log.warning(
                        "layer %s: %r is used as a directory after a non-directory "
                        "member of that name; replaced",
                        self.where,
                        part,
                    )
                child = len(self.entries)
                self.entries.append(_synthetic_dir(part, node, child))
                self.children.append({})
                kids[part] = child
            node = child
        return node, name

    def _add_hardlink(self, path: str, member: Member) -> None:
        target_path, escaped = normalise(member.link)
        if escaped:
            log.warning(
                "layer %s: hard link %r -> %r points outside the layer root; clamped",
                self.where,
                path,
                member.link,
            )
        target = self._lookup(target_path)
        if target is None or self.entries[target].kind is Kind.DIR or not path:
            log.warning(
                "layer %s: hard link %r -> %r has no file to link to; dropped",
                self.where,
                path,
                member.link,
            )
            return
        if target_path == path:
            return
        parent, name = self._parent_of(path)
        kids = self.children[parent]
        assert kids is not None
        src = self.entries[target]
        index = len(self.entries)
        self.entries.append(
            Entry(
                name,
                parent,
                src.kind,
                src.mode,
                src.uid,
                src.gid,
                src.size,
                src.mtime_ns,
                src.data_offset,
                src.link,
                src.rdev,
                src.xattrs,
                src.identity,
                1,
            )
        )
        self.children.append(None)
        kids[name] = index

    def _lookup(self, path: str) -> int | None:
        return lookup_path(self.children, path)

    def finish(self, complete: bool, error: str | None, uncompressed_size: int) -> LayerIndex:
        """Link counts over the names still reachable, and the finished index."""
        entries, children = self.entries, self.children
        links: dict[int, int] = {}
        stack = [0]
        while stack:
            kids = children[stack.pop()]
            assert kids is not None
            for child in kids.values():
                entry = entries[child]
                if entry.kind is Kind.DIR:
                    stack.append(child)
                else:
                    links[entry.identity] = links.get(entry.identity, 0) + 1
        for entry, kids in zip(entries, children, strict=True):
            if kids is not None:
                entry.nlink = 2 + sum(1 for c in kids.values() if children[c] is not None)
            else:
                entry.nlink = links.get(entry.identity, 1)
        return LayerIndex(entries, children, complete, error, uncompressed_size)


def index_members(members: Iterable[Member], where: str, limits: Limits) -> LayerIndex:
    """Index from an already-parsed member list (tests, and small in-memory tars)."""
    builder = IndexBuilder(where, limits)
    for member in members:
        builder.add(member)
    return builder.finish(True, None, 0)

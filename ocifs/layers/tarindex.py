"""Turn a layer's tar members into a LayerIndex (one layer's tree, as extracted).

Applies what an extractor does within one layer: names are normalised inside
the root, missing parents are synthesised, a later member replaces an earlier
one of the same name (a directory replaced by a non-directory loses its
subtree; a directory over a directory only updates attributes), and hard links
resolve against the tree built so far, inside the root only.

A member that cannot be shown (a name component the rule of
`model.naming.name_problem` rejects, a path or link target over PATH_MAX, an
out-of-range header field) is hidden with a warning naming it; the rest of the
layer is served. A whiteout below a non-directory of the same layer is dropped:
there is nothing below a file to white out (`umoci repack` writes these when a
directory became a file), and it must not turn that file into a directory.

While the pass runs, `watched` lets another thread learn that a name it waits
for has been set (`layers.live.LiveIndex`): `entries` only grows and an entry
is complete before its name is set in its directory, so the tree built so far
can be read (under the GIL) while members are still being added.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

from ocifs.codec.limits import Limits
from ocifs.errors import LimitExceeded
from ocifs.layers import tarwalk
from ocifs.layers.entry import Entry, Kind, LayerIndex, lookup_path
from ocifs.layers.names import WHITEOUT_PREFIX, normalise
from ocifs.layers.tarwalk import Member
from ocifs.model.naming import NAME_MAX, name_problem

log = logging.getLogger(__name__)

#: Hidden members logged one by one per layer; the rest are counted in one line.
HIDDEN_LOGGED = 20

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
    """Accumulates members; `finish` computes link counts.

    One thread adds; others may read `entries`/`children` meanwhile (see the
    module docstring) and register in `watched`.
    """

    def __init__(self, where: str, limits: Limits) -> None:
        self.where = where
        self.limits = limits
        self.entries: list[Entry] = [_synthetic_dir("", 0, 0)]
        self.children: list[dict[str, int] | None] = [{}]
        self.members = 0
        self.hidden = 0
        # one int object per distinct mode/uid/gid/mtime value, not one per member
        self._ints: dict[int, int] = {}
        #: identities that hard links share (link counts are only counted for these)
        self._linked: set[int] = set()
        #: (directory entry, name) -> callback run in the adding thread once that
        #: name is set in that directory (then removed): the publishing hook
        self.watched: dict[tuple[int, str], Callable[[], None]] = {}

    def _published(self, parent: int, name: str) -> None:
        """`name` now answers in directory `parent`: wake whoever waits for it."""
        if self.watched:
            wake = self.watched.pop((parent, name), None)
            if wake is not None:
                wake()

    def _hide(self, name: str, problem: str) -> None:
        self.hidden += 1
        if self.hidden <= HIDDEN_LOGGED:
            log.warning("layer %s: member %r hidden: %s", self.where, name, problem)

    def _problem(self, path: str, member: Member) -> str | None:
        """Why the member at normalised `path` cannot be shown, or None."""
        if member.problem is not None:
            return member.problem
        if not (len(path) <= NAME_MAX and path.isascii() and "\0" not in path):
            # (the common case skips this: no component of a short ASCII path can fail)
            if len(os.fsencode(path)) > self.limits.max_path_bytes:
                return f"path longer than {self.limits.max_path_bytes} bytes"
            for part in path.split("/"):
                problem = name_problem(part)
                if problem is not None:
                    return f"name component {part[:80]!r} {problem}"
        link = member.link
        if link and member.type in (tarwalk.SYMLINK, tarwalk.HARDLINK):
            if "\0" in link:
                return "link target contains NUL"
            if len(os.fsencode(link)) > self.limits.max_path_bytes:
                return f"link target longer than {self.limits.max_path_bytes} bytes"
        for key in member.xattrs or ():
            if not key or "\0" in key or len(os.fsencode(key)) > NAME_MAX:
                return f"xattr name {key[:80]!r} is not valid"
        return None

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
        problem = self._problem(path, member)
        if problem is not None:
            self._hide(member.name[:200], problem)
            return
        if member.type == tarwalk.HARDLINK:
            self._add_hardlink(path, member)
            return
        kind = _KIND_OF_TYPE.get(member.type, Kind.FILE)
        if "/" in path and path.rpartition("/")[2].startswith(WHITEOUT_PREFIX) and (
            self._below_non_dir(path)
        ):
            log.debug("layer %s: whiteout %r lies below a non-directory; dropped",
                      self.where, path)
            return
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
        ints = self._ints
        self.entries.append(
            Entry(
                name,
                parent,
                kind,
                ints.setdefault(member.mode, member.mode),
                ints.setdefault(member.uid, member.uid),
                ints.setdefault(member.gid, member.gid),
                size,
                ints.setdefault(member.mtime_ns, member.mtime_ns),
                member.data_offset if kind is Kind.FILE else 0,
                member.link if kind is Kind.SYMLINK else "",
                member.rdev,
                member.xattrs,
                index,
                1,
                False,
                member.sparse if kind is Kind.FILE else None,
            )
        )
        self.children.append({} if kind is Kind.DIR else None)
        kids[name] = index
        self._published(parent, name)

    def _below_non_dir(self, path: str) -> bool:
        """Whether a parent directory of `path` is a non-directory in this layer."""
        node = 0
        for part in path.split("/")[:-1]:
            kids = self.children[node]
            child = kids.get(part) if kids is not None else None
            if child is None:
                return False
            if self.entries[child].kind is not Kind.DIR:
                return True
            node = child
        return False

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
                self._published(node, part)
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
        self._linked.add(src.identity)
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
                False,
                src.sparse,
            )
        )
        self.children.append(None)
        kids[name] = index
        self._published(parent, name)

    def _lookup(self, path: str) -> int | None:
        return lookup_path(self.children, path)

    def finish(self, complete: bool, error: str | None, uncompressed_size: int) -> LayerIndex:
        """Link counts over the names still reachable, and the finished index."""
        if self.hidden > HIDDEN_LOGGED:
            log.warning("layer %s: %d more members hidden (not logged one by one)",
                        self.where, self.hidden - HIDDEN_LOGGED)
        entries, children = self.entries, self.children
        shared = self._linked
        links: dict[int, int] = {}  # only identities with hard links: memory
        stack = [0] if shared else []
        while stack:
            kids = children[stack.pop()]
            assert kids is not None
            for child in kids.values():
                entry = entries[child]
                if entry.kind is Kind.DIR:
                    stack.append(child)
                elif entry.identity in shared:
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

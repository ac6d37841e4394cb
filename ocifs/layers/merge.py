"""The rootfs view: layers applied in order with the OCI whiteout rules.

Pure and I/O-free. For each directory of an upper layer: an opaque marker
(`.wh..wh..opq`) empties what the lower layers put there, `.wh.<name>` removes
`<name>` from the lower layers, then the layer's own entries are added — a
directory over a directory merges (the upper one's attributes win unless it was
only synthesised), anything else replaces what was there, subtree included.
Whiteouts only act on lower layers, never on entries of their own layer, and
are never shown. Other `.wh..wh.*` names (AUFS metadata) are hidden as well.

Tolerated oddities, each with one warning naming the layer and the path:
- a whiteout naming nothing (`.wh.`, `.wh..`, `.wh...`) is ignored;
- a path of an upper layer that goes through what a lower layer has as a
  symlink (possibly a loop) makes that name a directory, as overlayfs shows it;
  ocifs never follows symlinks (`umoci unpack` would write through the link).
An upper directory that exists only to hold whiteouts (the parent was never
a tar member) is not created where no lower directory exists, and does not
replace a lower non-directory: there is nothing below to remove, and `umoci
unpack` keeps the file (it writes what `umoci repack` produced for a
directory that became a file).
"""

from __future__ import annotations

import logging

from ocifs.errors import NotADirectory
from ocifs.layers.entry import Kind, LayerIndex
from ocifs.layers.names import OPAQUE, WHITEOUT_PREFIX

log = logging.getLogger(__name__)


class MergedTree:
    """Nodes of the merged tree; node 0 is the root. Immutable once built."""

    __slots__ = ("_entry", "_kids", "_layer")

    def __init__(
        self, layer: list[int], entry: list[int], kids: list[dict[str, int] | None]
    ) -> None:
        # two flat lists rather than a (layer, entry) tuple per node: 56 bytes less each
        self._layer = layer
        self._entry = entry
        self._kids = kids

    def __len__(self) -> int:
        return len(self._layer)

    def children(self, node: int) -> dict[str, int]:
        """Name -> node for a directory node (do not mutate the dict)."""
        kids = self._kids[node]
        if kids is None:
            raise NotADirectory(f"rootfs node {node} is not a directory")
        return kids

    def is_dir(self, node: int) -> bool:
        return self._kids[node] is not None

    def source(self, node: int) -> tuple[int, int]:
        """(layer number in the manifest, entry index in that layer's LayerIndex)."""
        return self._layer[node], self._entry[node]

    def lookup(self, path: str) -> int | None:
        """Node of a relative path ("" is the root), or None."""
        node = 0
        for part in path.split("/") if path else ():
            kids = self._kids[node]
            if kids is None or part not in kids:
                return None
            node = kids[part]
        return node


def _only_whiteouts(index: LayerIndex, dir_idx: int) -> bool:
    """Whether a synthesised directory's subtree holds nothing but whiteouts."""
    stack = [dir_idx]
    while stack:
        for name, child in (index.children[stack.pop()] or {}).items():
            if name.startswith(WHITEOUT_PREFIX):
                continue
            entry = index.entries[child]
            if entry.kind is not Kind.DIR or not entry.synthetic:
                return False
            stack.append(child)
    return True


def merge(indexes: list[LayerIndex], names: list[str] | None = None) -> MergedTree:
    """Apply `indexes` bottom (0) to top; see the module docstring.

    `names` (the layers' digests) are only used in warnings.
    """
    src_layer: list[int] = [0]
    src_entry: list[int] = [0]
    kids: list[dict[str, int] | None] = [{}]
    for layer, index in enumerate(indexes):
        where = names[layer] if names else f"#{layer}"
        entries, children = index.entries, index.children
        if layer == 0 or not entries[0].synthetic:
            src_layer[0] = layer
        stack = [(0, 0)]  # (entry in this layer, merged node), both directories
        while stack:
            entry_dir, node = stack.pop()
            mine = children[entry_dir]
            have = kids[node]
            assert mine is not None and have is not None
            if OPAQUE in mine:
                have.clear()
            for name, child in mine.items():
                if name.startswith(WHITEOUT_PREFIX) and not name.startswith(".wh..wh."):
                    target = name[len(WHITEOUT_PREFIX) :]
                    if target in ("", ".", ".."):
                        log.warning("layer %s: whiteout %r names nothing; ignored",
                                    where, index.path(child))
                        continue
                    have.pop(target, None)
            for name, child in mine.items():
                if name.startswith(WHITEOUT_PREFIX):
                    continue
                entry = entries[child]
                old = have.get(name)
                if entry.kind is Kind.DIR:
                    if old is not None and kids[old] is not None:
                        if not entry.synthetic:
                            src_layer[old], src_entry[old] = layer, child
                        stack.append((child, old))
                        continue
                    if entry.synthetic and _only_whiteouts(index, child):
                        continue  # whiteouts with no lower directory: nothing to remove
                    if old is not None and entry.synthetic:
                        lower = indexes[src_layer[old]].entries[src_entry[old]]
                        if lower.kind is Kind.SYMLINK:
                            log.warning(
                                "layer %s: %r is used as a directory where a lower layer has "
                                "a symlink (-> %r); shown as a directory, the symlink is "
                                "not followed",
                                where, index.path(child), lower.link,
                            )
                    new = len(src_layer)
                    src_layer.append(layer)
                    src_entry.append(child)
                    kids.append({})
                    have[name] = new
                    stack.append((child, new))
                else:
                    have[name] = len(src_layer)
                    src_layer.append(layer)
                    src_entry.append(child)
                    kids.append(None)
    return MergedTree(src_layer, src_entry, kids)

"""The parent of each directory the kernel currently knows, for `..` in listings.

The kernel resolves `..` itself; a listing's `..` entry is for tools that
expect it (`ls -ai`), and shows the directory it was last looked up or listed
in. An entry lives exactly as long as the kernel holds the directory's inode:
every reply that hands the kernel an inode (a lookup, a READDIRPLUS entry other
than `.` and `..`, a mkdir) adds one reference, and FORGET takes back what it
says. Without the FORGET half the table grew with every directory ever seen.
"""

from __future__ import annotations


class DirParents:
    """directory inode -> (parent inode, the kernel's lookup count of the directory)."""

    def __init__(self) -> None:
        self._entries: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, inode: int, parent: int) -> None:
        """The kernel was given `inode` as a child of `parent` (one more reference)."""
        entry = self._entries.get(inode)
        if entry is None:
            self._entries[inode] = [parent, 1]
        else:
            entry[0] = parent
            entry[1] += 1

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped `count` references; at none the entry goes."""
        entry = self._entries.get(inode)
        if entry is None:
            return
        entry[1] -= count
        if entry[1] <= 0:
            del self._entries[inode]

    def parent(self, inode: int) -> int | None:
        entry = self._entries.get(inode)
        return None if entry is None else entry[0]
